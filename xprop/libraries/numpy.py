"""NumPy, through ``array_api_compat.numpy``: the default backend, on the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xprop.libraries._base import ArrayLibrary
from xprop.typing import Array, Namespace

__all__ = ["NumPyLibrary"]

# Why a read-only NumPy array (also the one inside an array-api-strict array) cannot be a
# parameter that an optimizer updates.
READ_ONLY = (
    "it is read-only (flags.writeable is False: a view of read-only memory, e.g. from "
    "np.broadcast_to or a read-only buffer); pass a writable copy, e.g. x.copy()"
)


class NumPyLibrary(ArrayLibrary):
    """NumPy on the CPU.  The step is eager; MPI reads and writes NumPy arrays directly."""

    name = "numpy"
    module = "numpy"
    install_hint = "pip install xprop"

    def load(self) -> Namespace:
        import array_api_compat.numpy as xp

        return xp

    def cannot_write(self, x: Array) -> str | None:
        if not x.flags.writeable:
            return READ_ONLY
        return None

    def pack(
        self, arrays: Sequence[Array], out: Array | None = None, *, device: bool = False
    ) -> Array:
        # One pass over the data, straight into the (reused) buffer.
        return np.concatenate([np.reshape(a, -1) for a in arrays], out=out)

    def unpack(self, buffer: Array, arrays: Sequence[Array]) -> list[Array]:
        offset = 0
        for a in arrays:
            np.copyto(a, buffer[offset : offset + a.size].reshape(a.shape))
            offset += a.size
        return list(arrays)
