"""NumPy, through ``array_api_compat.numpy``: the default backend, on the CPU."""

from __future__ import annotations

from typing import Any

from xprop.backends._base import ArrayLibrary

__all__ = ["NumPyLibrary"]


class NumPyLibrary(ArrayLibrary):
    """NumPy on the CPU.  Every hook is the standard's default; the step is eager."""

    name = "numpy"
    module = "numpy"
    install_hint = "pip install xprop"

    def load(self) -> Any:
        import array_api_compat.numpy as xp

        return xp
