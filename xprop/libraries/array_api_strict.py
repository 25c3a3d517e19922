"""array-api-strict: the standard's reference implementation, which proves code standard-clean."""

from __future__ import annotations

import numpy as np

from xprop.libraries._base import ArrayLibrary
from xprop.libraries.numpy import READ_ONLY
from xprop.typing import Array, Namespace

__all__ = ["ArrayApiStrictLibrary"]


class ArrayApiStrictLibrary(ArrayLibrary):
    """array-api-strict, with its test devices ``device1`` and ``device2``."""

    name = "array_api_strict"
    module = "array_api_strict"
    install_hint = "pip install 'xprop[strict]'"

    def load(self) -> Namespace:
        import array_api_strict as xp

        return xp

    def version_info(self, xp: Namespace) -> dict[str, str]:
        info = super().version_info(xp)
        # The standard's version it enforces (a flag users may change) decides what passes.
        info["array api version"] = str(xp.get_array_api_strict_flags()["api_version"])
        return info

    def cannot_write(self, x: Array) -> str | None:
        # An array-api-strict array wraps a NumPy array, which may be read-only (asarray of
        # a read-only NumPy array does not copy); the standard has no way to ask.
        inner = getattr(x, "_array", None)
        flags = getattr(inner, "flags", None)
        if flags is not None and not flags.writeable:
            return READ_ONLY
        return None

    def to_numpy(self, x: Array) -> np.ndarray:
        xp = self.namespace()
        # Only arrays on the CPU device expose the buffer protocol; move others there first.
        return np.array(x.to_device(xp.Device("CPU_DEVICE")), copy=True)
