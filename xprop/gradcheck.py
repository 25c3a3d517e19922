"""A gradient checker for any layer or function, on any backend: :func:`check_backward`.

It compares a layer's analytic ``backward`` against central differences of its forward pass
(:mod:`xprop.gradient` holds the book's plain :func:`~xprop.gradient.numerical_gradient`),
in the spirit of Chainer's ``check_backward`` and ``torch.autograd.gradcheck``: a random
upstream gradient, float64 by default, kinks (ReLU at 0) skipped, and a report that names
the backend, the input, the worst errors and where they are.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import device as _device

from xprop._differences import element_count, perturbations
from xprop._namespace import namespace
from xprop.backend import ensure_float64, get_backend, normal_like, to_numpy
from xprop.checks import check_flag, check_positive, require_array
from xprop.typing import Array, Namespace

__all__ = ["GradientCheckResult", "check_backward"]


@dataclass
class GradientCheckResult:
    """What :func:`check_backward` compared.

    ``max_abs_error`` and ``max_rel_error`` map each checked input or parameter name
    (``"x0"``, ``"x1"``, ..., or a parameter such as ``"W"``) to its worst error;
    ``skipped`` counts elements left out because they sit on a kink (e.g. ReLU at 0).
    The relative error ``|analytic - numeric| / |numeric|`` is taken only over elements
    whose numerical gradient exceeds ``atol`` in size: below that the check is absolute,
    and a relative error against a numerical gradient of about 0 (a saturated sigmoid,
    whose difference quotient is rounding noise) says nothing.  It is 0 when there is no
    such element.
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
    inputs: Array | Sequence[Array],
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
    therefore fails, and so does one that returns NaN or inf anywhere.

    Parameters
    ----------
    target : layer or callable
        A layer (any object with ``forward(*inputs)`` and ``backward(dout)``; ``backward``
        returns one gradient or a tuple of them), or a function ``forward(*inputs)`` given
        together with ``backward``.  A layer is left as it was found: its parameters,
        stored gradients (``dW``...) and forward caches are restored afterwards.
    inputs : array or sequence of arrays
        Where to check: finite values.  Floating inputs are converted to float64 on their
        own device; where the device lacks float64, the check runs on the host with NumPy
        instead.  Integer inputs (labels) are passed as they are.
    backward : callable, optional
        With a function ``target``: ``backward(dout, *inputs)`` returning the gradient(s).
    params : sequence of str
        Layer attributes to check too, each against the gradient the layer stores under
        ``"d" + name`` (the book's ``W``/``dW``, ``b``/``db``).  List every floating array
        the layer computes with (converted to float64 like the inputs; a layer's dtype
        rule would reject float64 inputs against float32 weights).
    wrt : sequence of int, optional
        Indices of the inputs to differentiate (default: every floating input).  Pass
        ``(0,)`` for a loss layer whose second input holds labels, one-hot ones included.
    eps : float
        Finite-difference step, finite and positive.
    atol, rtol : float
        An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``
        (finite, at least 0).
    seed : int
        Seed of the random ``dout``.
    float64 : bool
        Compute in float64 (default; float32 checks are noise-limited and flaky).  With
        ``False`` the check runs in the inputs' dtype: raise ``eps``, ``atol`` and
        ``rtol`` to match (e.g. ``1e-2``, ``1e-3``, ``1e-2`` in float32).

    Returns
    -------
    GradientCheckResult
        The worst errors, when every element passes.

    Raises
    ------
    AssertionError
        A gradient that disagrees (the report names the backend, the input, its shape, the
        worst absolute and relative errors, where they occur and both values there), has
        the wrong shape, or holds NaN or inf; a numerical gradient that is not finite; a
        forward output that is not finite; every element on a kink.
    ValueError
        Nothing to check (no floating input and no ``params``), inputs or parameters with
        NaN or inf, ``wrt`` naming a missing or integer input, a ``backward`` that returns
        fewer gradients than there are floating inputs (one-hot labels: pass ``wrt``), a
        non-positive or non-finite ``eps``, negative ``atol``/``rtol``.
    TypeError
        A ``target`` without ``forward``/``backward``, a ``params`` or ``wrt`` of the wrong
        type, inputs that are not arrays.
    """
    eps = check_positive(eps, "eps")
    atol = check_positive(atol, "atol", zero_ok=True)
    rtol = check_positive(rtol, "rtol", zero_ok=True)
    check_flag(float64, "float64")
    forward_fn, backward_fn = _resolve_target(target, backward)
    args: list[Array] = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not args:
        raise ValueError("check_backward needs at least one input")
    xp = namespace(*args)
    for i, a in enumerate(args):
        require_array(a, f"input x{i}")
    params = _param_names(target, params)
    floating = [i for i, a in enumerate(args) if xp.isdtype(a.dtype, "real floating")]
    explicit_wrt = wrt is not None
    wrt = _input_indices(wrt, args, floating)
    if not wrt and not params:
        raise ValueError(
            "check_backward has nothing to check: no input is floating (integer inputs "
            "such as labels are not differentiated) and no params were given; pass "
            "floating inputs, or params=('W', ...) for a layer's parameters"
        )
    saved = {name: getattr(target, name) for name in params}
    for name, value in [*((f"x{i}", args[i]) for i in floating), *saved.items()]:
        _require_finite(xp, value, name)
    state = _layer_state(target) if backward is None else None
    if float64:
        ensure_float64(xp)
    try:
        args, param_values, xp = _to_float64(xp, args, saved, float64, to_numpy)
        for name, value in param_values.items():
            setattr(target, name, value)

        try:
            y = forward_fn(*args)
        except TypeError as exc:
            if not float64:
                raise
            raise TypeError(
                f"{exc}\n(check_backward converted the floating inputs to float64: list the "
                "layer's floating parameters in params=(...) so that they are converted "
                "too, or build the layer in float64)"
            ) from exc
        require_array(y, "the forward output")
        dout = normal_like(y, seed)
        grads = backward_fn(dout, *args)
        grads = grads if isinstance(grads, tuple) else (grads,)
        analytic = {}
        for i in wrt:
            if i >= len(grads):
                _too_few_gradients(len(grads), i, explicit_wrt, xp)
            analytic[f"x{i}"] = grads[i]
        for name in params:
            if not hasattr(target, "d" + name):
                raise ValueError(
                    f"{type(target).__name__} has no attribute d{name} after backward: "
                    f"check_backward compares parameter {name} with the gradient the layer "
                    f"stores as d{name}"
                )
            analytic[name] = getattr(target, "d" + name)

        def loss(values: list[Any], named: dict[str, Array]) -> Any:
            for pname, pvalue in named.items():
                setattr(target, pname, pvalue)
            return xp.sum(forward_fn(*values) * dout)

        result = GradientCheckResult(backend=_library_name(xp))
        weighted = y * dout
        base, scale = float(xp.sum(weighted)), float(xp.sum(xp.abs(weighted)))
        if not (math.isfinite(base) and math.isfinite(scale)):
            raise AssertionError(
                f"gradient check on {result.backend}: the forward output is not finite "
                "(NaN or inf) at the check point; choose inputs where it is finite"
            )
        # Rounding noise of a one-sided difference quotient of the loss (whose terms sum
        # to `scale` in size): where two slopes differ by less, nothing marks a kink.
        noise = 8 * float(xp.finfo(y.dtype).eps) * scale / eps
        checked = 0
        f: Callable[[Any], Any]
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
            checked += _compare(
                xp, result, name, point, value, f, base, eps, atol, rtol, noise, y.dtype
            )
        if not checked:
            raise ValueError(
                "check_backward has nothing to check: every input and parameter it would "
                "differentiate is empty (size 0)"
            )
        return result
    finally:
        for name, value in saved.items():
            setattr(target, name, value)
        if state is not None:
            _restore_layer_state(target, state)


def _param_names(target: Any, params: Any) -> tuple[str, ...]:
    if isinstance(params, str) or not all(isinstance(p, str) for p in params):
        raise TypeError(
            f"params must be a sequence of attribute names, e.g. ('W', 'b'), got {params!r}"
        )
    missing = [p for p in params if not hasattr(target, p)]
    if missing:
        raise ValueError(
            f"params names {missing} but {type(target).__name__} has no such attribute"
        )
    return tuple(params)


def _input_indices(wrt: Any, args: list[Any], floating: list[int]) -> list[int]:
    """The input indices to differentiate: ``wrt`` validated, or every floating input."""
    if wrt is None:
        return floating
    if isinstance(wrt, (int, str)) or not all(
        isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in wrt
    ):
        raise TypeError(f"wrt must be a sequence of input indices, e.g. (0,), got {wrt!r}")
    chosen = sorted({int(i) for i in wrt})
    for i in chosen:
        if not 0 <= i < len(args):
            raise ValueError(
                f"wrt names input {i}, but there are {len(args)} input(s): indices "
                f"0..{len(args) - 1}"
            )
        if i not in floating:
            raise ValueError(
                f"wrt names input {i}, which has the integer dtype {args[i].dtype} (labels?); "
                "only floating inputs can be differentiated"
            )
    return chosen


def _too_few_gradients(count: int, i: int, explicit: bool, xp: Namespace) -> None:
    if explicit:
        raise AssertionError(
            f"gradient check on {_library_name(xp)}: backward returned {count} gradient(s) "
            f"but wrt asks for input {i}"
        )
    raise ValueError(
        f"backward returned {count} gradient(s), but input x{i} is floating and is "
        f"checked by default; if it holds labels (one-hot) or other data that is not "
        f"differentiated, pass wrt=(0,) (the indices of the inputs to check)"
    )


def _require_finite(xp: Namespace, value: Any, name: str) -> None:
    if xp.isdtype(value.dtype, "real floating") and not bool(xp.all(xp.isfinite(value))):
        raise ValueError(
            f"{name} holds NaN or inf: a gradient check needs a finite point; check the "
            "data (or the layer's parameters) first"
        )


def _layer_state(target: Any) -> dict[str, Any] | None:
    """A shallow copy of the layer's attributes, to put back after the check."""
    attributes = getattr(target, "__dict__", None)
    return None if attributes is None else dict(attributes)


def _restore_layer_state(target: Any, state: dict[str, Any]) -> None:
    # The check left float64 gradients (dW) and caches (x, out) in a layer that may be
    # float32; its parameters were already put back through setattr (which reaches a
    # bound layer's dict).  Put every attribute back as it was.
    attributes = target.__dict__
    attributes.clear()
    attributes.update(state)


def _resolve_target(target: Any, backward: Callable[..., Any] | None) -> tuple[Any, Any]:
    if backward is not None:
        if not (callable(target) and callable(backward)):
            raise TypeError(
                "with backward=..., target must be the forward function: both callables"
            )
        return target, backward
    if hasattr(target, "forward") and hasattr(target, "backward"):
        return target.forward, lambda dout, *inputs: target.backward(dout)
    raise TypeError(
        "check_backward needs a layer with forward/backward methods, or a forward function "
        "together with backward=callable(dout, *inputs)"
    )


def _to_float64(
    xp: Namespace, args: list[Any], params: dict[str, Array], float64: bool, to_numpy: Any
) -> tuple[list[Any], dict[str, Any], Any]:
    if not float64:
        return args, dict(params), xp

    def cast(ns: Any, a: Any) -> Any:
        return ns.astype(a, ns.float64) if ns.isdtype(a.dtype, "real floating") else a

    try:
        return [cast(xp, a) for a in args], {k: cast(xp, v) for k, v in params.items()}, xp
    except (TypeError, RuntimeError, ValueError):
        # The device has no float64 (Apple MPS, some accelerators): check on the host.
        host = get_backend("numpy", dtype="float64")  # floats become float64, ints stay
        moved = [host.asarray(to_numpy(a)) for a in args]
        return moved, {k: host.asarray(to_numpy(v)) for k, v in params.items()}, host.xp


def _compare(
    xp: Namespace,
    result: GradientCheckResult,
    name: str,
    point: Array,
    analytic: Any,
    f: Callable[[Any], Any],
    base: float,
    eps: float,
    atol: float,
    rtol: float,
    noise: float,
    dtype: Any,
) -> int:
    """Compare one gradient; record its errors in ``result``; the number of elements."""
    shape = tuple(point.shape)
    got = tuple(analytic.shape) if hasattr(analytic, "shape") else None
    if got != shape:
        raise AssertionError(
            f"gradient check on {result.backend}: the gradient of {name} has shape {got}, "
            f"expected {shape}"
        )
    size = element_count(point)
    if size == 0:
        result.max_abs_error[name] = result.max_rel_error[name] = 0.0
        result.skipped[name] = 0
        return 0
    dev = _device(point)
    ana = xp.astype(analytic, point.dtype)
    finite = xp.isfinite(ana)
    n_bad = int(xp.count_nonzero(~finite))
    if n_bad:
        first = int(xp.argmax(xp.reshape(xp.astype(~finite, xp.int8), (-1,))))
        raise AssertionError(
            f"gradient check failed on {result.backend} for {name} (shape {shape}): the "
            f"analytic gradient holds {n_bad} non-finite value(s) (NaN or inf), the first "
            f"at index {_unravel(first, shape)}: "
            f"{float(xp.reshape(ana, (-1,))[first])}; backward produced them"
        )
    numeric, kink = [], []
    for k, (x_plus, x_minus) in enumerate(perturbations(xp, point, eps)):
        f_plus, f_minus = float(f(x_plus)), float(f(x_minus))
        slope = (f_plus - f_minus) / (2 * eps)
        if not math.isfinite(slope):
            raise AssertionError(
                f"gradient check on {result.backend}: the numerical gradient of {name} is "
                f"not finite at index {_unravel(k, shape)} (the forward pass gives "
                f"{f_plus} and {f_minus} within eps={eps:g} of the point); choose a point "
                "where the function is finite and smooth"
            )
        numeric.append(slope)
        # One-sided slopes that disagree mark a kink (ReLU at 0): no derivative to check.
        # Beyond the tolerance, the threshold allows for the rounding noise of the dtype
        # (large in float32), so smooth elements are never taken for kinks.
        right, left = (f_plus - base) / eps, (base - f_minus) / eps
        kink.append(abs(right - left) > 10 * (atol + rtol * abs(right + left)) + noise)
    num = xp.reshape(xp.asarray(numeric, dtype=point.dtype, device=dev), shape)
    skip = xp.reshape(xp.asarray(kink, dtype=xp.bool, device=dev), shape)
    zero = xp.zeros((), dtype=point.dtype, device=dev)
    abs_err = xp.where(skip, zero, xp.abs(ana - num))
    # Relative errors only where the numerical gradient is clearly not 0 (see
    # GradientCheckResult): against rounding noise they reach 1e+296 and mean nothing.
    meaningful = xp.abs(num) > atol
    rel_err = xp.where(
        meaningful, abs_err / xp.where(meaningful, xp.abs(num), xp.ones_like(num)), zero
    )
    bad = abs_err > atol + rtol * xp.abs(num)
    result.max_abs_error[name] = float(xp.max(abs_err))
    result.max_rel_error[name] = float(xp.max(rel_err))
    result.skipped[name] = int(xp.count_nonzero(skip))
    if result.skipped[name] == size:
        raise AssertionError(
            f"gradient check on {result.backend}: every element of {name} (shape {shape}) "
            "sits on a kink; choose inputs away from non-differentiable points"
        )
    n_bad = int(xp.count_nonzero(bad))
    if n_bad:
        flat_abs = xp.reshape(abs_err, (-1,))
        flat_rel = xp.reshape(rel_err, (-1,))
        ia, ir = int(xp.argmax(flat_abs)), int(xp.argmax(flat_rel))
        flat_ana, flat_num = xp.reshape(ana, (-1,)), xp.reshape(num, (-1,))
        hint = ""
        if noise > atol:
            hint = (
                f"\n  the numerical gradient's rounding noise in {dtype} is about "
                f"{noise / 8:.1g} at eps={eps:g}: check in float64 (float64=True), or raise "
                "eps, atol and rtol"
            )
        raise AssertionError(
            f"gradient check failed on {result.backend} for {name} (shape {shape}): "
            f"{n_bad} of {size} elements differ beyond atol={atol:g}, rtol={rtol:g}\n"
            f"  worst absolute error {float(flat_abs[ia]):.6g} at index {_unravel(ia, shape)}: "
            f"analytic {float(flat_ana[ia]):.10g}, numeric {float(flat_num[ia]):.10g}\n"
            f"  worst relative error {float(flat_rel[ir]):.6g} at index {_unravel(ir, shape)}: "
            f"analytic {float(flat_ana[ir]):.10g}, numeric {float(flat_num[ir]):.10g}\n"
            f"  ({result.skipped[name]} element(s) skipped at kinks; eps={eps:g})" + hint
        )
    return size


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for s in reversed(shape):
        index.append(flat % s)
        flat //= s
    return tuple(reversed(index))


def _library_name(xp: Namespace) -> str:
    name = getattr(xp, "__name__", type(xp).__name__)
    return name.removeprefix("array_api_compat.")
