"""The numerical gradient and the gradient checker itself."""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import Relu, Sigmoid, SoftmaxWithLoss
from xprop.gradient import check_backward, numerical_gradient


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
    import xprop.gradient as G

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
