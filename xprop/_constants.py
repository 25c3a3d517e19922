"""Small constant arrays that compute code reuses: ones vectors, class ranges, 0-d numbers.

A training step needs the same few constants every time (the ``arange(C)`` that one-hot
encodes labels, the ones vectors of :mod:`xprop._sums`, the zero of ReLU, the floor under
the probabilities of the cross-entropy).  Creating them
costs a kernel launch each on a GPU, so they are made once per (namespace, shape, dtype,
device) and kept.  Never while tracing or capturing, though: an array made inside
``jax.jit`` or a CUDA-graph capture belongs to that trace, and keeping it would poison the
next one (``UnexpectedTracerError``).  The array's library says whether it is traced.

The cached arrays are read-only by contract: nothing in xprop writes into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xprop.checks import device as _device  # the attribute: array_api_compat's costs more
from xprop.libraries import library_for

__all__ = ["class_range", "constant", "element_index", "ones", "smallest_normal", "zero"]

_CACHE: dict[tuple[Any, ...], Any] = {}
_MAX_ENTRIES = 256  # a few per network shape; cleared wholesale if a program makes many


def ones(xp: Any, like: Any, shape: tuple[int, ...]) -> Any:
    """``xp.ones(shape)`` in ``like``'s dtype, on ``like``'s device."""
    dtype, dev = like.dtype, _device(like)
    key = ("ones", shape, id(xp), dtype, dev)
    found = _lookup(key)
    if found is None:
        found = _keep(key, xp, like, lambda: xp.ones(shape, dtype=dtype, device=dev))
    return found


def zero(xp: Any, like: Any) -> Any:
    """A 0-d zero in ``like``'s dtype, on ``like``'s device.

    ``xp.maximum(x, zero(xp, x))`` instead of ``xp.maximum(x, 0.0)``: array-api-compat turns
    a Python scalar argument of a torch function into a new device tensor at every call,
    which on CUDA is a blocking host-to-device copy (and is illegal inside a CUDA graph).
    """
    dtype, dev = like.dtype, _device(like)
    key = ("zero", id(xp), dtype, dev)
    found = _lookup(key)
    if found is None:
        found = _keep(key, xp, like, lambda: xp.zeros((), dtype=dtype, device=dev))
    return found


def constant(xp: Any, like: Any, value: float) -> Any:
    """A 0-d array holding ``value`` in ``like``'s dtype, on ``like``'s device.

    For a number an ``xp`` *function* takes: ``xp.maximum(y, constant(xp, y, 0.5))``, not
    ``xp.maximum(y, 0.5)``, for the reason :func:`zero` gives.  (Operators are fine with
    Python numbers: ``y * 0.5`` makes no array.)  ``value`` must be a Python number.
    """
    dtype, dev = like.dtype, _device(like)
    # repr: -0.0 and 0.0 are equal keys but different constants; nan is not even equal
    # to itself.  The type too: 1 and 1.0 are the same in a float dtype but not in others.
    key = ("constant", type(value).__name__, repr(value), id(xp), dtype, dev)
    found = _lookup(key)
    if found is None:
        found = _keep(key, xp, like, lambda: xp.full((), value, dtype=dtype, device=dev))
    return found


def smallest_normal(xp: Any, like: Any) -> Any:
    """The smallest positive normal number of ``like``'s floating dtype, 0-d, on its device.

    The floor ``xp.maximum(p, smallest_normal(xp, p))`` keeps ``log(p)`` finite.
    """
    return constant(xp, like, float(xp.finfo(like.dtype).smallest_normal))


def class_range(xp: Any, like: Any, num_classes: int, dtype: Any) -> Any:
    """``xp.arange(num_classes)`` of integer ``dtype`` on ``like``'s device."""
    dev = _device(like)
    key = ("arange", num_classes, id(xp), dtype, dev)
    found = _lookup(key)
    if found is None:
        found = _keep(key, xp, like, lambda: xp.arange(num_classes, dtype=dtype, device=dev))
    return found


def element_index(xp: Any, like: Any, shape: tuple[int, ...]) -> Any:
    """``reshape(arange(prod(shape)), shape)`` in int32 on ``like``'s device: each element's
    flat index (what Dropout's device masks hash)."""
    dev = _device(like)
    key = ("index", shape, id(xp), dev)
    found = _lookup(key)
    if found is None:
        n = 1
        for s in shape:
            n *= s

        def make() -> Any:
            return xp.reshape(xp.arange(n, dtype=xp.int32, device=dev), shape)

        found = _keep(key, xp, like, make)
    return found


def _lookup(key: tuple[Any, ...]) -> Any:
    # A hit needs no tracing check: an array made outside a trace may be used inside one
    # (it becomes a constant of the compiled program).  This runs a few times per step.
    try:
        return _CACHE.get(key)
    except TypeError:  # a device that defines equality but no hash: key it by its repr
        return _CACHE.get(_repr_key(key))


def _keep(key: tuple[Any, ...], xp: Any, like: Any, make: Callable[[], Any]) -> Any:
    """Make the constant; keep it unless ``like`` is being traced or captured."""
    made = make()
    if library_for(xp).is_tracing(like):
        return made
    if len(_CACHE) >= _MAX_ENTRIES:
        _CACHE.clear()
    try:
        _CACHE[key] = made
    except TypeError:
        _CACHE[_repr_key(key)] = made
    return made


def _repr_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*key[:-1], ("repr", repr(key[-1])))
