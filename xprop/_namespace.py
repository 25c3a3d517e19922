"""Namespace inference and input checks for compute code: which array library, which dtype?"""

from __future__ import annotations

import math
import numbers
from typing import Any

from array_api_compat import array_namespace

__all__ = [
    "MixedBackendError",
    "check_count",
    "check_flag",
    "check_positive",
    "dtype_name",
    "isdtype",
    "namespace",
    "require_array",
    "require_float",
    "require_same_float",
    "resolve_dtype",
]


class MixedBackendError(TypeError):
    """Arrays of two different array libraries were passed to one call."""


# Python numbers are weak scalars in the standard: they join an array's dtype.
_SCALARS = (int, float, bool)
# The namespace of each array type met so far (numpy.ndarray -> array_api_compat.numpy).
_BY_TYPE: dict[type, Any] = {}


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


def require_float(xp: Any, x: Any, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype (names ``what`` and the fix)."""
    if not isdtype(xp, x.dtype, "real floating"):
        raise TypeError(
            f"{what} must have a floating dtype, got {x.dtype}; convert it first, e.g. "
            "backend.asarray(x, dtype='float32') or xp.astype(x, xp.float32) / 255.0"
        )


def require_array(x: Any, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` is an array (has a dtype and a shape)."""
    if not (hasattr(x, "dtype") and hasattr(x, "shape")):
        raise TypeError(
            f"{what} must be an array, got {type(x).__name__} {x!r:.60}; convert it first "
            "with backend.asarray(...)"
        )


def require_same_float(xp: Any, x: Any, what: str, dtype: Any, owner: str) -> None:
    """Raise ``TypeError`` unless ``x`` has ``dtype``, the floating dtype of ``owner``.

    xprop's one dtype rule: a layer's parameters decide its dtype, and an input of another
    floating dtype is an error on every backend (NumPy would silently compute in the wider
    dtype, PyTorch would refuse the matrix product).
    """
    if x.dtype != dtype:
        want = dtype_name(xp, dtype)
        raise TypeError(
            f"{what} has dtype {dtype_name(xp, x.dtype)} but {owner} is {want}: the "
            f"parameters decide the dtype; convert the input first, with backend.asarray(x) "
            f"on a {want} backend or xp.astype(x, xp.{want})"
        )


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


def resolve_dtype(xp: Any, dtype: Any, what: str) -> Any:
    """The dtype of namespace ``xp`` that ``dtype`` names: a name (``"float64"``) or a dtype.

    Raises ``TypeError`` naming ``what`` when ``xp`` has no such dtype.
    """
    for name in _DTYPE_NAMES:
        candidate = getattr(xp, name, None)
        if candidate is None:
            continue
        if (dtype == name) if isinstance(dtype, str) else _same_dtype(dtype, candidate):
            return candidate
    available = ", ".join(n for n in _DTYPE_NAMES if getattr(xp, n, None) is not None)
    raise TypeError(
        f"{what}: unknown dtype {dtype!r} for {getattr(xp, '__name__', xp)}; pass a name "
        f"such as 'float32' or a dtype of the same library (one of: {available})"
    )


def _same_dtype(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a dtype of another library may refuse the comparison
        return False


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool``; else ``TypeError`` (``"no"`` must not mean yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``.

    Python and NumPy integers are accepted (``numbers.Integral``); ``bool`` is not
    (``True`` is not a size), nor are floats such as ``2.5`` or ``5.0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def check_positive(value: Any, name: str, *, zero_ok: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite number ``> 0`` (``>= 0`` with ``zero_ok``).

    Raises ``TypeError`` for a non-number (``bool`` included), ``ValueError`` for NaN, an
    infinity, a negative number or (without ``zero_ok``) zero.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        bound = "at least 0" if zero_ok else "positive"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return number
