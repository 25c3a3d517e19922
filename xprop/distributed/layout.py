"""What the ranks compare before they exchange arrays: keys, shapes and dtypes.

Ranks that exchange buffers of different sizes may not notice (or may wait forever), so
:class:`~xprop.distributed.DataParallel` compares a *layout* — ``(key, shape, dtype)`` of
every array, in a fixed key order — across the ranks once, and afterwards only checks a
cheap local fingerprint.  Arrays of one dtype travel in one buffer (:func:`groups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xprop._namespace import dtype_name, namespace
from xprop.checks import require_array
from xprop.typing import Array

__all__ = ["Layout", "difference", "fingerprint", "groups", "keys", "layout"]

#: ``(key, shape, dtype name)`` of every array, in :func:`keys` order.
Layout = tuple[tuple[str, tuple[int, ...], str], ...]


def keys(arrays: Mapping[str, Array]) -> list[Any]:
    """The keys in a fixed order, the same on every rank whatever the dict's order."""
    return sorted(arrays, key=str)


def layout(arrays: Mapping[str, Array]) -> Layout:
    """``(key, shape, dtype)`` of every array, in :func:`keys` order: what ranks compare.

    Raises ``TypeError`` for anything but a dict of arrays.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"expected a dict of arrays (like net.params or net.gradient(x, t)), got "
            f"{type(arrays).__name__}"
        )
    out = []
    for key in keys(arrays):
        value = arrays[key]
        require_array(value, f"entry {key!r}")
        xp = namespace(value)
        out.append((str(key), tuple(int(d) for d in value.shape), dtype_name(xp, value.dtype)))
    return tuple(out)


def fingerprint(arrays: Mapping[str, Array]) -> Any:
    """Keys, shapes and dtype objects in the dict's order (``None`` for a non-array)."""
    try:
        return tuple((k, tuple(v.shape), v.dtype) for k, v in arrays.items())
    except (AttributeError, TypeError):
        return None


def groups(agreed: Layout) -> list[frozenset[str]]:
    """The keys of each dtype (one buffer per dtype), in a fixed order."""
    by_dtype: dict[str, set[str]] = {}
    for key, _, dtype in agreed:
        by_dtype.setdefault(dtype, set()).add(key)
    return [frozenset(by_dtype[d]) for d in sorted(by_dtype)]


def difference(reference: Layout, other: Layout, rank: int) -> str:
    """The first difference between rank 0's layout and ``rank``'s, in words."""
    ref = {e[0]: e for e in reference}
    got = {e[0]: e for e in other}
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    if missing or extra:
        return (
            f"rank {rank} has keys {sorted(got)} where rank 0 has {sorted(ref)} "
            f"(missing: {missing}, extra: {extra})"
        )
    for key in ref:
        if ref[key] != got[key]:
            return f"rank {rank} has {_describe(got[key])} where rank 0 has {_describe(ref[key])}"
    return "they differ"


def _describe(entry: tuple[str, tuple[int, ...], str]) -> str:
    key, shape, dtype = entry
    return f"{key} {shape} {dtype}"
