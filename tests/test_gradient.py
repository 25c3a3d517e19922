"""The numerical gradient and the gradient checker itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xprop
from xprop import Relu, Sigmoid, SoftmaxWithLoss
from xprop._namespace import namespace
from xprop.gradcheck import check_backward
from xprop.gradient import numerical_gradient


def test_numerical_gradient_book_function(backend: xprop.Backend) -> None:
    """Book ch. 4.4: the gradient of x0**2 + x1**2 at (3, 4) is (6, 8)."""
    x = backend.asarray([3.0, 4.0])
    before = backend.to_numpy(x).copy()
    grad = numerical_gradient(lambda v: backend.xp.sum(v * v), x)
    np.testing.assert_allclose(backend.to_numpy(grad), [6.0, 8.0], rtol=1e-8)
    np.testing.assert_array_equal(backend.to_numpy(x), before)  # x was not modified
    assert grad.dtype == x.dtype


def test_numerical_gradient_matrix_shape(backend: xprop.Backend) -> None:
    w = backend.asarray(np.arange(6.0).reshape(2, 3))
    grad = numerical_gradient(lambda v: backend.xp.sum(v**3), w, h=1e-4)
    # Central differences of x**3 give exactly 3 x**2 + h**2: the O(h**2) error term.
    want = 3 * np.arange(6.0).reshape(2, 3) ** 2 + 1e-8
    np.testing.assert_allclose(backend.to_numpy(grad), want, rtol=1e-7, atol=1e-9)


def test_the_checker_is_still_importable_from_its_former_module() -> None:
    """``from xprop.gradient import check_backward``, as before xprop.gradcheck existed."""
    from xprop import gradcheck, gradient
    from xprop.gradient import GradientCheckResult
    from xprop.gradient import check_backward as former

    assert former is gradcheck.check_backward is xprop.check_backward
    assert GradientCheckResult is gradcheck.GradientCheckResult
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gradient.no_such_name  # noqa: B018


class SoftmaxIgnoringDout(SoftmaxWithLoss):
    """The book's SoftmaxWithLoss.backward: ignores dout."""

    def backward(self, dout=1):  # type: ignore[no-untyped-def]
        return super().backward(1)


class WrongSigmoid(Sigmoid):
    """A classic slip: y * (1 + y) instead of y * (1 - y)."""

    def backward(self, dout):  # type: ignore[no-untyped-def]
        return dout * self.out * (1.0 + self.out)


def test_checker_catches_wrong_backward(backend: xprop.Backend) -> None:
    x = backend.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    with pytest.raises(AssertionError) as info:
        check_backward(WrongSigmoid(), x)
    report = str(info.value)
    assert "gradient check failed" in report
    assert "for x0 (shape (3, 4))" in report
    assert "worst absolute error" in report
    assert "at index (" in report
    assert "analytic" in report
    assert "numeric" in report
    check_backward(Sigmoid(), x)  # the right one passes on the same input


def test_checker_catches_ignored_dout(backend: xprop.Backend) -> None:
    x = backend.asarray(np.random.default_rng(1).standard_normal((4, 3)))
    t = backend.asarray([0, 2, 1, 1])
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_backward(SoftmaxIgnoringDout(), (x, t))
    check_backward(SoftmaxWithLoss(), (x, t))


def test_checker_skips_relu_kink(backend: xprop.Backend) -> None:
    x = backend.asarray([[0.0, 1.0, -2.0], [3.0, 0.0, -0.5]])
    result = check_backward(Relu(), x)
    assert result.skipped["x0"] == 2
    assert result.max_abs_error["x0"] < 1e-8


def test_checker_on_function_pair_and_float32_input(backend32: xprop.Backend) -> None:
    x = backend32.asarray([[0.5, -1.0], [2.0, 0.25]])
    xp = backend32.xp

    result = check_backward(lambda v: v * v * v, x, backward=lambda dout, v: 3 * v * v * dout)
    assert result.max_rel_error["x0"] < 1e-6
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_backward(lambda v: v * v * v, x, backward=lambda dout, v: 3 * v * v + dout)
    assert x.dtype == xp.float32  # the caller's array is untouched


def test_checker_restores_layer_params(backend32: xprop.Backend) -> None:
    W = backend32.asarray(np.ones((3, 2)))
    layer = xprop.Affine(W, None)
    check_backward(layer, backend32.asarray(np.ones((2, 3))), params=("W",))
    assert layer.W is W
    assert layer.W.dtype == backend32.dtype


def test_checker_reports_wrong_shape(backend: xprop.Backend) -> None:
    x = backend.asarray(np.ones((2, 3)))
    with pytest.raises(AssertionError, match=r"has shape \(3,\), expected \(2, 3\)"):
        check_backward(lambda v: v * 2.0, x, backward=lambda dout, v: dout[0, :] * 2.0)


def test_checker_falls_back_to_the_host_without_float64(
    backend32: xprop.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device with no float64 (Apple MPS): the check runs on the host with NumPy."""
    import xprop.gradcheck as G

    class NoFloat64:  # the backend's namespace, except that float64 casts fail
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(backend32.xp, name)

        def astype(self, x, dtype):  # type: ignore[no-untyped-def]
            raise TypeError("this device has no float64")

    real = G._to_float64
    monkeypatch.setattr(G, "_to_float64", lambda xp, *rest: real(NoFloat64(), *rest))
    x = backend32.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    assert check_backward(Sigmoid(), x).backend == "numpy"
    with pytest.raises(AssertionError, match="gradient check failed on numpy"):
        check_backward(WrongSigmoid(), x)


# --------------------------------------------------------------------------------------
# The checker against planted faults (hypothesis), and the checker's own inputs
# --------------------------------------------------------------------------------------


class Planted:
    """A correct layer whose backward is broken in one planted way."""

    def __init__(self, layer: Any, fault: str) -> None:
        self.layer, self.fault = layer, fault

    def forward(self, *inputs: Any) -> Any:
        return self.layer.forward(*inputs)

    def backward(self, dout: Any) -> Any:
        xp = namespace(dout)
        if self.fault == "ignored dout":
            dx = self.layer.backward(xp.ones_like(dout))
        else:
            dx = self.layer.backward(dout)
        first = dx[0] if isinstance(dx, tuple) else dx
        if self.fault == "nan":
            first = first * xp.nan
        elif self.fault == "inf":
            first = xp.where(xp.abs(first) >= 0, xp.inf, first)
        elif self.fault == "one nan":
            first = xp.where(first == xp.max(first), xp.nan, first)
        elif self.fault == "wrong sign":
            first = -first
        elif self.fault == "wrong shape":
            first = xp.reshape(first, (-1,))
        return (first, *dx[1:]) if isinstance(dx, tuple) else first


FAULTS = {
    "nan": "non-finite value",
    "one nan": "non-finite value",
    "inf": "non-finite value",
    "wrong sign": "gradient check failed",
    "ignored dout": "gradient check failed",
    "wrong shape": "has shape",
}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fault=st.sampled_from(sorted(FAULTS)),
    layer=st.sampled_from(["Sigmoid", "Affine", "Mul", "Softmax"]),
    n=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_checker_catches_planted_faults(
    backend: xprop.Backend, fault: str, layer: str, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal((n, 3)))
    if layer == "Sigmoid":
        target, inputs, params = Sigmoid(), (x,), ()
    elif layer == "Affine":
        W, b = (backend.asarray(rng.standard_normal(s)) for s in ((3, 2), (2,)))
        target, inputs, params = xprop.Affine(W, b), (x,), ("W", "b")
    elif layer == "Mul":
        target, inputs, params = xprop.MulLayer(), (x, backend.asarray(rng.random(3))), ()
    else:
        t = backend.asarray(rng.integers(0, 3, n))
        target, inputs, params = SoftmaxWithLoss(), (x, t), ()
    check_backward(target, inputs, params=params)  # the real layer passes
    with pytest.raises(AssertionError, match=FAULTS[fault]):
        check_backward(Planted(target, fault), inputs)


def test_checker_rejects_non_finite_inputs(backend: xprop.Backend) -> None:
    x = backend.asarray([[0.5, float("nan")], [1.0, 2.0]])
    with pytest.raises(ValueError, match="x0 holds NaN or inf"):
        check_backward(Sigmoid(), x)
    W = backend.asarray([[1.0], [float("inf")]])
    with pytest.raises(ValueError, match="W holds NaN or inf"):
        check_backward(xprop.Affine(W), backend.asarray([[1.0, 2.0]]), params=("W",))


def test_checker_with_nothing_to_check(backend: xprop.Backend) -> None:
    ints = backend.asarray([1, 2, 3])
    with pytest.raises(ValueError, match="nothing to check"):
        check_backward(lambda v: v * 2, ints, backward=lambda dout, v: dout * 2)
    with pytest.raises(ValueError, match="nothing to check"):
        check_backward(Sigmoid(), backend.asarray(np.zeros((0, 3))))


def test_checker_argument_errors(backend: xprop.Backend) -> None:
    x = backend.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    t = backend.asarray([0, 2, 1, 1])
    hot = backend.asarray(np.eye(3)[[0, 2, 1, 1]])
    with pytest.raises(ValueError, match=r"wrt names input 2, but there are 2 input\(s\)"):
        check_backward(SoftmaxWithLoss(), (x, t), wrt=(2,))
    with pytest.raises(ValueError, match=r"wrt names input 1, which has the integer dtype"):
        check_backward(SoftmaxWithLoss(), (x, t), wrt=(0, 1))
    with pytest.raises(TypeError, match=r"wrt must be a sequence of input indices, e.g. \(0,\)"):
        check_backward(SoftmaxWithLoss(), (x, t), wrt=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"input x1 is floating .* pass wrt=\(0,\)"):
        check_backward(SoftmaxWithLoss(), (x, hot))
    check_backward(SoftmaxWithLoss(), (x, hot), wrt=(0,))
    for eps in (0.0, -1e-6, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be finite and positive"):
            check_backward(Sigmoid(), x, eps=eps)
    with pytest.raises(ValueError, match="atol must be finite and at least 0"):
        check_backward(Sigmoid(), x, atol=-1.0)
    with pytest.raises(TypeError, match=r"params must be a sequence of attribute names"):
        check_backward(xprop.Affine(backend.zeros((3, 2))), x, params="W")
    with pytest.raises(ValueError, match=r"params names \['V'\] but Affine has no such"):
        check_backward(xprop.Affine(backend.zeros((3, 2))), x, params=("V",))


def test_saturated_layer_relative_error_is_meaningful(backend: xprop.Backend) -> None:
    """Numerical gradients of ~0 (rounding noise) no longer give max rel 1e+296."""
    x = backend.asarray([[40.0, -40.0, 0.5, 30.0, 100.0, -800.0]])
    result = check_backward(Sigmoid(), x)
    assert result.max_rel_error["x0"] < 1e-4  # over the one element with a real slope: 0.5
    assert result.max_abs_error["x0"] < 1e-9
    # All saturated: no element has a numerical gradient above atol, so no relative error.
    assert check_backward(Sigmoid(), backend.asarray([[40.0, 100.0]])).max_rel_error["x0"] == 0


def test_float32_check_finds_no_false_kinks(backend32: xprop.Backend) -> None:
    x = backend32.asarray(np.random.default_rng(0).standard_normal((3, 4)))
    loose = {"eps": 1e-2, "atol": 1e-3, "rtol": 1e-2, "float64": False}
    result = check_backward(Sigmoid(), x, **loose)
    assert result.skipped["x0"] == 0
    assert result.max_rel_error["x0"] < 1e-2
    # At the float64 step the float32 difference quotient is noise: it fails, and says so,
    # rather than calling smooth elements kinks.
    with pytest.raises(AssertionError, match=r"rounding noise in .*float32") as info:
        check_backward(Sigmoid(), x, float64=False)
    assert "0 element(s) skipped at kinks" in str(info.value)
    # Real kinks are still found in float32.
    relu = check_backward(Relu(), backend32.asarray([[0.0, 1.5, -2.0, 0.0]]), **loose)
    assert relu.skipped["x0"] == 2


def test_checker_leaves_a_float32_layer_as_it_was(backend32: xprop.Backend) -> None:
    be = backend32
    layer = xprop.Affine(be.asarray(np.ones((3, 2))), be.asarray(np.zeros(2)))
    x = be.asarray(np.random.default_rng(0).random((4, 3)))
    layer.forward(x)
    layer.backward(be.asarray(np.ones((4, 2))))
    dW, db, cached_x = layer.dW, layer.db, layer.x
    check_backward(layer, x, params=("W", "b"))
    assert layer.dW is dW
    assert layer.db is db
    assert layer.x is cached_x
    assert layer.dW.dtype == be.dtype
    assert layer.W.dtype == be.dtype
    fresh = xprop.Affine(be.asarray(np.ones((3, 2))), None)
    check_backward(fresh, x, params=("W",))
    assert fresh.dW is None  # nothing left behind by the check
    wrong = WrongAffine(be.asarray(np.ones((3, 2))), be.asarray(np.zeros(2)))
    wrong.forward(x)
    with pytest.raises(AssertionError, match="for W"):  # ... also when the check fails
        check_backward(wrong, x, params=("W", "b"))
    assert wrong.x is not None
    assert wrong.x.dtype == be.dtype
    assert wrong.dW is None
    # Without params, the float32 weights meet float64 inputs: the error says what to do.
    with pytest.raises(TypeError, match=r"list the layer's floating parameters in params"):
        check_backward(layer, x)


class WrongAffine(xprop.Affine):
    """dW with the wrong sign."""

    def backward(self, dout: Any) -> Any:
        dx = super().backward(dout)
        self.dW = -self.dW
        return dx


def test_numerical_gradient_of_integer_x(backend: xprop.Backend) -> None:
    """The issue's case: [1, 3, 6] (numpy/jax) and [2, 4, 5] (torch) before."""
    xp = backend.xp
    x = backend.asarray([1, 2, 3])
    grad = numerical_gradient(lambda v: xp.sum(v * v), x)
    default = xp.__array_namespace_info__().default_dtypes(device=backend.device)
    assert grad.dtype == default["real floating"]
    tol = 1e-6 if grad.dtype == xp.float64 else 5e-2  # float32 rounding of f / h
    np.testing.assert_allclose(backend.to_numpy(grad), [2.0, 4.0, 6.0], rtol=tol)
    np.testing.assert_array_equal(backend.to_numpy(x), [1, 2, 3])
    with pytest.raises(TypeError, match="needs real numbers"):
        numerical_gradient(lambda v: xp.sum(v), backend.asarray([True, False]))
    for h in (0.0, -1e-4, float("nan")):
        with pytest.raises(ValueError, match="h must be finite and positive"):
            numerical_gradient(lambda v: xp.sum(v * v), backend.asarray([1.0]), h=h)
