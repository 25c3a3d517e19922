"""The book's numerical gradient (ch. 4), on any backend.

:func:`numerical_gradient` is the book's central-difference gradient, written without
element assignment so it runs on immutable arrays too.  The gradient checker that compares
a layer's analytic ``backward`` against it, :func:`~xprop.gradcheck.check_backward`, lives
in :mod:`xprop.gradcheck` (``from xprop.gradient import check_backward`` still works).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import device as _device

from xprop._differences import perturbations
from xprop._namespace import namespace
from xprop.checks import check_positive, require_array
from xprop.typing import Array

__all__ = ["numerical_gradient"]

# The gradient checker's names, importable from here as before it had its own module.
_MOVED_TO_GRADCHECK = ("GradientCheckResult", "check_backward")


def numerical_gradient(f: Callable[[Array], Any], x: Array, h: float = 1e-4) -> Array:
    """Gradient of the scalar function ``f`` at ``x`` by central differences.

    ``grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)`` for every element ``i`` of ``x``:
    the book's ``numerical_gradient``, with error ``O(h**2)``.  Unlike the book, ``f`` is
    called with a *perturbed copy* of ``x`` (``x`` itself is never modified), so write
    ``f`` to use its argument.  Returns an array of ``x``'s shape and device, in ``x``'s
    floating dtype.  An integer ``x`` (``[1, 2, 3]``) is first converted to the
    namespace's default floating dtype on its device (float64 on NumPy and
    array-api-strict, float32 on PyTorch and on JAX without 64-bit mode): a step of
    ``h`` cannot be taken in integers.

    Costs ``2 * x.size`` calls of ``f`` and one device read per element: it is for
    checking small problems, not for training.  Use float64: in float32 the difference
    quotient loses about half its digits.

    Raises
    ------
    TypeError
        ``x`` not an array, or of a boolean (or other non-real) dtype.
    ValueError
        ``h`` not a finite positive number.
    """
    xp = namespace(x)
    require_array(x, "x")
    h = check_positive(h, "h")
    if not xp.isdtype(x.dtype, "real floating"):
        if not xp.isdtype(x.dtype, "integral"):
            raise TypeError(
                f"numerical_gradient needs real numbers, got x of dtype {x.dtype}; pass a "
                "floating array"
            )
        # A step of h in integers truncates to 0 or 1: compute in floating point.
        dtype = xp.__array_namespace_info__().default_dtypes(device=_device(x))["real floating"]
        x = xp.astype(x, dtype)
    values = [
        float(f(x_plus) - f(x_minus)) / (2 * h) for x_plus, x_minus in perturbations(xp, x, h)
    ]
    return xp.reshape(xp.asarray(values, dtype=x.dtype, device=_device(x)), tuple(x.shape))


def __getattr__(name: str) -> Any:
    """``check_backward`` and ``GradientCheckResult``, from :mod:`xprop.gradcheck`, on demand.

    Importing them here would make every user of the book's gradient load the checker.
    """
    if name in _MOVED_TO_GRADCHECK:
        from xprop import gradcheck

        return getattr(gradcheck, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
