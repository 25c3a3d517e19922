"""Central differences without element assignment: the perturbed copies of a point.

The book's ``numerical_gradient`` sets ``x[idx] = tmp + h`` and back, one element at a
time; element assignment is not in the array API standard (and JAX arrays are immutable).
:func:`perturbations` builds the same arrays, bit for bit, with a ``where`` on a flat-index
mask.  Shared by :func:`xprop.gradient.numerical_gradient` and the gradient checker
(:mod:`xprop.gradcheck`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from array_api_compat import device as _device

__all__ = ["element_count", "perturbations"]


def element_count(x: Any) -> int:
    """The number of elements of array ``x`` (the product of its shape)."""
    n = 1
    for s in x.shape:
        n *= int(s)
    return n


def perturbations(xp: Any, x: Any, h: float) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x + h e_i, x - h e_i)`` for every flat (C-order) index ``i``.

    ``x`` itself is never modified.
    """
    index = xp.reshape(xp.arange(element_count(x), device=_device(x)), tuple(x.shape))
    x_plus, x_minus = x + h, x - h
    for i in range(element_count(x)):
        at_i = index == i
        yield xp.where(at_i, x_plus, x), xp.where(at_i, x_minus, x)
