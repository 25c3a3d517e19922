"""Small constant arrays that compute code reuses: ones vectors, class ranges, a zero.

A training step needs the same few constants every time (the ``arange(C)`` that one-hot
encodes labels, the ones vectors of :mod:`xprop._sums`, the zero of ReLU).  Creating them
costs a kernel launch each on a GPU, so they are made once per (namespace, shape, dtype,
device) and kept.  Never while tracing or capturing, though: an array made inside
``jax.jit`` or a CUDA-graph capture belongs to that trace, and keeping it would poison the
next one (``UnexpectedTracerError``).  The array's library says whether it is traced.

The cached arrays are read-only by contract: nothing in xprop writes into them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import device as device_of

from xprop.backends import library_for

__all__ = ["class_range", "ones", "zero"]

_CACHE: dict[tuple[Any, ...], Any] = {}
_MAX_ENTRIES = 256  # a few per network shape; cleared wholesale if a program makes many


def ones(xp: Any, like: Any, shape: tuple[int, ...]) -> Any:
    """``xp.ones(shape)`` in ``like``'s dtype, on ``like``'s device."""
    dtype, dev = like.dtype, device_of(like)
    return _constant(
        ("ones", shape),
        xp,
        like,
        dtype,
        dev,
        lambda: xp.ones(shape, dtype=dtype, device=dev),
    )


def zero(xp: Any, like: Any) -> Any:
    """A 0-d zero in ``like``'s dtype, on ``like``'s device.

    ``xp.maximum(x, zero(xp, x))`` instead of ``xp.maximum(x, 0.0)``: array-api-compat turns
    a Python scalar argument of a torch function into a new device tensor at every call,
    which on CUDA is a blocking host-to-device copy (and is illegal inside a CUDA graph).
    """
    dtype, dev = like.dtype, device_of(like)
    return _constant(
        ("zero",),
        xp,
        like,
        dtype,
        dev,
        lambda: xp.zeros((), dtype=dtype, device=dev),
    )


def class_range(xp: Any, like: Any, num_classes: int, dtype: Any) -> Any:
    """``xp.arange(num_classes)`` of integer ``dtype`` on ``like``'s device."""
    dev = device_of(like)
    return _constant(
        ("arange", num_classes),
        xp,
        like,
        dtype,
        dev,
        lambda: xp.arange(num_classes, dtype=dtype, device=dev),
    )


def _constant(
    what: tuple[Any, ...], xp: Any, like: Any, dtype: Any, dev: Any, make: Callable[[], Any]
) -> Any:
    if library_for(xp).is_tracing(like):
        return make()
    key = (*what, id(xp), dtype, _device_key(dev))
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.clear()
        found = _CACHE[key] = make()
    return found


def _device_key(dev: Any) -> Any:
    try:
        hash(dev)
    except TypeError:  # some libraries' devices define equality but no hash: use the repr
        return ("repr", repr(dev))
    return dev
