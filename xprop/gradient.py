"""Numerical gradients and a gradient checker for any layer or function, on any backend.

:func:`numerical_gradient` is the book's central-difference gradient (ch. 4), written
without element assignment so it runs on immutable arrays too.  :func:`check_backward`
compares a layer's analytic ``backward`` against it, in the spirit of Chainer's
``check_backward`` and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import device as _device

from xprop._namespace import namespace

__all__ = ["GradientCheckResult", "check_backward", "numerical_gradient"]


def _flat_index(xp: Any, x: Any) -> Any:
    """An integer array of ``x``'s shape holding each element's flat (C-order) index."""
    return xp.reshape(xp.arange(_size(x), device=_device(x)), tuple(x.shape))


def _perturbations(xp: Any, x: Any, h: float) -> Any:
    """Yield ``(x + h e_i, x - h e_i)`` for every flat index ``i``, without mutating ``x``.

    Element assignment (the book's ``x[idx] = tmp + h``) is not in the standard; a
    ``where`` on a flat-index mask builds the same arrays, bit for bit.
    """
    index = _flat_index(xp, x)
    x_plus, x_minus = x + h, x - h
    for i in range(_size(x)):
        at_i = index == i
        yield xp.where(at_i, x_plus, x), xp.where(at_i, x_minus, x)


def numerical_gradient(f: Callable[[Any], Any], x: Any, h: float = 1e-4) -> Any:
    """Gradient of the scalar function ``f`` at ``x`` by central differences.

    ``grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)`` for every element ``i`` of ``x``:
    the book's ``numerical_gradient``, with error ``O(h**2)``.  Unlike the book, ``f`` is
    called with a *perturbed copy* of ``x`` (``x`` itself is never modified), so write
    ``f`` to use its argument.  Returns an array of ``x``'s shape, dtype and device.

    Costs ``2 * x.size`` calls of ``f`` and one device read per element: it is for
    checking small problems, not for training.  Use float64: in float32 the difference
    quotient loses about half its digits.
    """
    xp = namespace(x)
    values = [
        float(f(x_plus) - f(x_minus)) / (2 * h) for x_plus, x_minus in _perturbations(xp, x, h)
    ]
    return xp.reshape(xp.asarray(values, dtype=x.dtype, device=_device(x)), tuple(x.shape))


def _size(x: Any) -> int:
    n = 1
    for s in x.shape:
        n *= int(s)
    return n


@dataclass
class GradientCheckResult:
    """What :func:`check_backward` compared.

    ``max_abs_error`` and ``max_rel_error`` map each checked input or parameter name
    (``"x0"``, ``"x1"``, ..., or a parameter such as ``"W"``) to its worst error;
    ``skipped`` counts elements left out because they sit on a kink (e.g. ReLU at 0).
    """

    backend: str
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = [
            f"{name}: max abs {self.max_abs_error[name]:.3g}, max rel "
            f"{self.max_rel_error[name]:.3g}, skipped {self.skipped[name]}"
            for name in self.max_abs_error
        ]
        return f"gradient check on {self.backend}: " + "; ".join(rows)


def check_backward(
    target: Any,
    inputs: Any,
    backward: Callable[..., Any] | None = None,
    *,
    params: Sequence[str] = (),
    wrt: Sequence[int] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    float64: bool = True,
) -> GradientCheckResult:
    """Check an analytic backward pass against central differences; raise if they disagree.

    The check draws a random upstream gradient ``dout`` of the output's shape and compares
    ``backward(dout)`` with the numerical gradient of ``L(inputs) = sum(forward(inputs) *
    dout)``.  A backward that ignores ``dout`` (as the book's ``SoftmaxWithLoss`` does)
    therefore fails.

    Parameters
    ----------
    target : layer or callable
        A layer (any object with ``forward(*inputs)`` and ``backward(dout)``; ``backward``
        returns one gradient or a tuple of them), or a function ``forward(*inputs)`` given
        together with ``backward``.
    inputs : array or sequence of arrays
        Where to check.  Converted to float64 on their own device; where the device lacks
        float64, the check runs on the host with NumPy instead.
    backward : callable, optional
        With a function ``target``: ``backward(dout, *inputs)`` returning the gradient(s).
    params : sequence of str
        Layer attributes to check too, each against the gradient the layer stores under
        ``"d" + name`` (the book's ``W``/``dW``, ``b``/``db``).  Restored afterwards.
    wrt : sequence of int, optional
        Indices of the inputs to differentiate (default: all floating inputs; e.g. ``(0,)``
        for ``SoftmaxWithLoss`` whose second input holds labels).
    eps : float
        Finite-difference step.
    atol, rtol : float
        An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    seed : int
        Seed of the random ``dout``.
    float64 : bool
        Compute in float64 (default; float32 checks are noise-limited and flaky).

    Returns
    -------
    GradientCheckResult
        The worst errors, when every element passes.

    Raises
    ------
    AssertionError
        With a report naming the backend, the input, its shape, the worst absolute and
        relative errors and where they occur, and both values there.
    """
    from xprop.backend import ensure_float64, normal_like, to_host

    forward_fn, backward_fn = _resolve_target(target, backward)
    args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    xp = namespace(*args)
    saved = {name: getattr(target, name) for name in params}
    if float64:
        ensure_float64(xp)
    try:
        args, param_values, xp = _to_float64(xp, args, saved, float64, to_host)
        for name, value in param_values.items():
            setattr(target, name, value)
        if wrt is None:
            wrt = [i for i, a in enumerate(args) if xp.isdtype(a.dtype, "real floating")]

        y = forward_fn(*args)
        dout = normal_like(y, seed)
        grads = backward_fn(dout, *args)
        grads = grads if isinstance(grads, tuple) else (grads,)
        analytic = {f"x{i}": grads[i] for i in wrt}
        for name in params:
            analytic[name] = getattr(target, "d" + name)

        def loss(values: list[Any], named: dict[str, Any]) -> Any:
            for pname, pvalue in named.items():
                setattr(target, pname, pvalue)
            return xp.sum(forward_fn(*values) * dout)

        result = GradientCheckResult(backend=_library_name(xp))
        base = loss(args, param_values)
        for name, value in list(analytic.items()):
            if name.startswith("x") and name[1:].isdigit():
                i = int(name[1:])

                def f_input(v: Any, i: int = i) -> Any:
                    return loss([*args[:i], v, *args[i + 1 :]], param_values)

                point = args[i]
                f = f_input
            else:

                def f_param(v: Any, name: str = name) -> Any:
                    return loss(args, {**param_values, name: v})

                point = param_values[name]
                f = f_param
            _compare(xp, result, name, point, value, f, base, eps, atol, rtol)
        return result
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def _resolve_target(target: Any, backward: Callable[..., Any] | None) -> tuple[Any, Any]:
    if backward is not None:
        return target, backward
    if hasattr(target, "forward") and hasattr(target, "backward"):
        return target.forward, lambda dout, *inputs: target.backward(dout)
    raise TypeError(
        "check_backward needs a layer with forward/backward methods, or a forward function "
        "together with backward=callable(dout, *inputs)"
    )


def _to_float64(
    xp: Any, args: list[Any], params: dict[str, Any], float64: bool, to_numpy: Any
) -> tuple[list[Any], dict[str, Any], Any]:
    if not float64:
        return args, dict(params), xp

    def cast(ns: Any, a: Any) -> Any:
        return ns.astype(a, ns.float64) if ns.isdtype(a.dtype, "real floating") else a

    try:
        return [cast(xp, a) for a in args], {k: cast(xp, v) for k, v in params.items()}, xp
    except (TypeError, RuntimeError, ValueError):
        # The device has no float64 (Apple MPS, some accelerators): check on the host.
        from xprop.backend import get_backend

        host = get_backend("numpy", dtype="float64")  # floats become float64, ints stay
        moved = [host.asarray(to_numpy(a)) for a in args]
        return moved, {k: host.asarray(to_numpy(v)) for k, v in params.items()}, host.xp


def _compare(
    xp: Any,
    result: GradientCheckResult,
    name: str,
    point: Any,
    analytic: Any,
    f: Callable[[Any], Any],
    base: Any,
    eps: float,
    atol: float,
    rtol: float,
) -> None:
    shape = tuple(point.shape)
    if analytic is None or tuple(analytic.shape) != shape:
        got = None if analytic is None else tuple(analytic.shape)
        raise AssertionError(
            f"gradient check on {result.backend}: the gradient of {name} has shape {got}, "
            f"expected {shape}"
        )
    size = _size(point)
    numeric, kink = [], []
    base = float(base)
    for x_plus, x_minus in _perturbations(xp, point, eps):
        f_plus, f_minus = float(f(x_plus)), float(f(x_minus))
        numeric.append((f_plus - f_minus) / (2 * eps))
        # One-sided slopes that disagree mark a kink (ReLU at 0): no derivative to check.
        right, left = (f_plus - base) / eps, (base - f_minus) / eps
        kink.append(abs(right - left) > 10 * (atol + rtol * abs(right + left)))
    if size == 0:
        result.max_abs_error[name] = result.max_rel_error[name] = 0.0
        result.skipped[name] = 0
        return
    dev = _device(point)
    num = xp.reshape(xp.asarray(numeric, dtype=point.dtype, device=dev), shape)
    skip = xp.reshape(xp.asarray(kink, dtype=xp.bool, device=dev), shape)
    ana = xp.astype(analytic, num.dtype)
    abs_err = xp.where(skip, 0.0, xp.abs(ana - num))
    rel_err = abs_err / xp.maximum(xp.abs(num), xp.finfo(num.dtype).smallest_normal)
    bad = abs_err > atol + rtol * xp.abs(num)
    result.max_abs_error[name] = float(xp.max(abs_err))
    result.max_rel_error[name] = float(xp.max(xp.where(abs_err > 0, rel_err, 0.0)))
    result.skipped[name] = int(xp.count_nonzero(skip))
    if result.skipped[name] == size:
        raise AssertionError(
            f"gradient check on {result.backend}: every element of {name} (shape {shape}) "
            "sits on a kink; choose inputs away from non-differentiable points"
        )
    n_bad = int(xp.count_nonzero(bad))
    if n_bad:
        flat_abs = xp.reshape(abs_err, (-1,))
        flat_rel = xp.reshape(xp.where(abs_err > 0, rel_err, 0.0), (-1,))
        ia, ir = int(xp.argmax(flat_abs)), int(xp.argmax(flat_rel))
        flat_ana, flat_num = xp.reshape(ana, (-1,)), xp.reshape(num, (-1,))
        raise AssertionError(
            f"gradient check failed on {result.backend} for {name} (shape {shape}): "
            f"{n_bad} of {size} elements differ beyond atol={atol:g}, rtol={rtol:g}\n"
            f"  worst absolute error {float(flat_abs[ia]):.6g} at index {_unravel(ia, shape)}: "
            f"analytic {float(flat_ana[ia]):.10g}, numeric {float(flat_num[ia]):.10g}\n"
            f"  worst relative error {float(flat_rel[ir]):.6g} at index {_unravel(ir, shape)}: "
            f"analytic {float(flat_ana[ir]):.10g}, numeric {float(flat_num[ir]):.10g}\n"
            f"  ({result.skipped[name]} element(s) skipped at kinks; eps={eps:g})"
        )


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for s in reversed(shape):
        index.append(flat % s)
        flat //= s
    return tuple(reversed(index))


def _library_name(xp: Any) -> str:
    name = getattr(xp, "__name__", type(xp).__name__)
    return name.removeprefix("array_api_compat.")
