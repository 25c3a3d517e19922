"""Namespace inference for compute code: which array namespace, which dtype (and its name)?

The checks that inputs must pass live in :mod:`xprop.checks`.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

__all__ = [
    "MixedBackendError",
    "dtype_name",
    "find_dtype",
    "isdtype",
    "namespace",
    "resolve_dtype",
]


class MixedBackendError(TypeError):
    """Arrays of two different array libraries were passed to one call."""


# Python numbers are weak scalars in the standard: they join an array's dtype.
_SCALARS = (int, float, bool)
# The namespace of each array type met so far (numpy.ndarray -> array_api_compat.numpy).
_BY_TYPE: dict[type | None, Any] = {}


def namespace(*arrays: Any) -> Any:
    """The array-API namespace shared by ``arrays`` (Python scalars and ``None`` are ignored).

    Raises
    ------
    TypeError
        For host data that is not an array (a Python list or tuple, a string...): the
        message says to convert it with ``backend.asarray(...)`` first.
    MixedBackendError
        When the arrays come from different libraries (e.g. a NumPy image batch and torch
        labels): create both through the same :class:`xprop.Backend`.
    """
    # The hot path (one or two arrays of one type, seen before): a dict lookup, where
    # array_namespace takes microseconds.  One array type has one namespace.
    kind = type(arrays[0]) if arrays else None
    if len(arrays) == 1 or (len(arrays) == 2 and type(arrays[1]) is kind):
        found = _BY_TYPE.get(kind)
        if found is not None:
            return found
    present = [a for a in arrays if a is not None and not isinstance(a, _SCALARS)]
    try:
        xp = array_namespace(*present)
        same = all(type(a) is kind for a in arrays)
        if same and len(present) == len(arrays) and len(_BY_TYPE) < 64:
            _BY_TYPE[kind] = xp
        return xp
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
        host = [a for a in present if isinstance(a, (list, tuple))]
        if host:
            raise TypeError(
                f"expected arrays, got a Python {type(host[0]).__name__}; convert it first "
                "with backend.asarray(...) (e.g. xprop.get_backend().asarray(data)), which "
                "puts it on the backend's device in its dtype"
            ) from exc
        raise TypeError(
            f"expected arrays of an array-API library, got {kinds or 'no array at all'}; "
            "create them with backend.asarray(...)"
        ) from exc


def isdtype(xp: Any, dtype: Any, kind: str) -> bool:
    """``xp.isdtype(dtype, kind)`` as a Python bool."""
    return bool(xp.isdtype(dtype, kind))


def dtype_name(xp: Any, dtype: Any) -> str:
    """The standard name of a dtype of ``xp`` (``"float32"``), for messages."""
    for name in _DTYPE_NAMES:
        candidate = getattr(xp, name, None)
        if candidate is not None and _same_dtype(dtype, candidate):
            return name
    return str(dtype)


_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)


def dtype_label(dtype: Any) -> str:
    """The plain name (``"float64"``) of a dtype given as a name (any case), a NumPy dtype or
    scalar type (``numpy.float32``), or another library's dtype (``torch.float64``)."""
    if isinstance(dtype, str):
        text = dtype.strip().lower()
    elif type(dtype).__module__.split(".")[0] == "numpy":  # numpy.dtype('float32')
        text = getattr(dtype, "name", str(dtype))
    elif isinstance(dtype, type) and dtype.__module__.split(".")[0] == "numpy":
        text = dtype.__name__  # numpy.float32, the scalar type
    else:
        text = str(dtype)
    return text.removeprefix("torch.").removeprefix("numpy.")


def find_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype of namespace ``xp`` that ``dtype`` means, or ``None`` if it has none.

    ``dtype`` is a name (``"float64"``, any case), a dtype of ``xp``, or a NumPy dtype or
    scalar type (NumPy's spelling, on any backend).  The one dtype resolver:
    :func:`resolve_dtype` and the backends' ``dtype=`` use it.
    """
    for name in _DTYPE_NAMES:  # a dtype of xp itself
        candidate = getattr(xp, name, None)
        if candidate is not None and not isinstance(dtype, str) and _same_dtype(dtype, candidate):
            return candidate
    name = dtype_label(dtype)
    return getattr(xp, name, None) if name in _DTYPE_NAMES else None


def resolve_dtype(xp: Any, dtype: Any, what: str) -> Any:
    """The dtype of namespace ``xp`` that ``dtype`` means (:func:`find_dtype`).

    Raises ``TypeError`` naming ``what`` when ``xp`` has no such dtype.
    """
    found = find_dtype(xp, dtype)
    if found is None:
        available = ", ".join(n for n in _DTYPE_NAMES if getattr(xp, n, None) is not None)
        raise TypeError(
            f"{what}: unknown dtype {dtype!r} for {getattr(xp, '__name__', xp)}; pass a name "
            f"such as 'float32' or a dtype of the same library (one of: {available})"
        )
    return found


def _same_dtype(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a dtype of another library may refuse the comparison
        return False
