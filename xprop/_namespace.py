"""Namespace inference for compute code: which array library do these inputs belong to?"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

__all__ = ["MixedBackendError", "namespace", "require_float"]


class MixedBackendError(TypeError):
    """Arrays of two different array libraries were passed to one call."""


def namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays`` (Python scalars and ``None`` are ignored).

    Raises
    ------
    MixedBackendError
        When the arrays come from different libraries (e.g. a NumPy image batch and torch
        labels): create both through the same :class:`xprop.Backend`.
    """
    present = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    try:
        return array_namespace(*present)
    except TypeError as exc:
        kinds = ", ".join(
            sorted({f"{type(a).__module__}.{type(a).__qualname__}" for a in present})
        )
        if "Multiple namespaces" in str(exc) or "multiple" in str(exc).lower():
            raise MixedBackendError(
                f"arrays from different array libraries were mixed in one call ({kinds}); "
                "create all inputs with the same backend, e.g. backend.asarray(...) for both "
                "the data and the labels"
            ) from exc
        raise TypeError(f"expected arrays of an array-API library, got {kinds}: {exc}") from exc


def require_float(xp: Any, x: Any, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype (names ``what`` and the fix)."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{what} must have a floating dtype, got {x.dtype}; convert it first, e.g. "
            "backend.asarray(x, dtype='float32') or xp.astype(x, xp.float32) / 255.0"
        )
