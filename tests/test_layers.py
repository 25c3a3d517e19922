"""Each layer's backward against numerical gradients (float64), on every backend.

``check_backward`` draws a random upstream gradient, so a backward that ignores ``dout``
fails here; hypothesis draws the shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xprop
from xprop import AddLayer, Affine, MSELoss, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from xprop.gradcheck import check_backward

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
dims = st.integers(min_value=1, max_value=5)


def _normal(be: xprop.Backend, shape: tuple[int, ...], seed: int, scale: float = 1.0):
    return be.asarray(np.random.default_rng(seed).standard_normal(shape) * scale)


@SETTINGS
@given(n=dims, d=dims, seed=st.integers(0, 2**16))
def test_relu_backward(backend: xprop.Backend, n: int, d: int, seed: int) -> None:
    result = check_backward(Relu(), _normal(backend, (n, d), seed))
    assert result.max_abs_error["x0"] < 1e-7


@SETTINGS
@given(n=dims, d=dims, seed=st.integers(0, 2**16))
def test_sigmoid_backward(backend: xprop.Backend, n: int, d: int, seed: int) -> None:
    check_backward(Sigmoid(), _normal(backend, (n, d), seed, scale=3.0))


@SETTINGS
@given(n=dims, d=dims, m=dims, seed=st.integers(0, 2**16))
def test_affine_backward(backend: xprop.Backend, n: int, d: int, m: int, seed: int) -> None:
    layer = Affine(_normal(backend, (d, m), seed + 1), _normal(backend, (m,), seed + 2))
    result = check_backward(layer, _normal(backend, (n, d), seed), params=("W", "b"))
    assert set(result.max_abs_error) == {"x0", "W", "b"}


def test_affine_4d_input(backend: xprop.Backend) -> None:
    layer = Affine(_normal(backend, (2 * 3 * 2, 4), 1), _normal(backend, (4,), 2))
    x = _normal(backend, (3, 2, 3, 2), 0)
    out = layer.forward(x)
    assert tuple(out.shape) == (3, 4)
    dx = layer.backward(backend.xp.ones_like(out))
    assert tuple(dx.shape) == (3, 2, 3, 2)
    check_backward(layer, x, params=("W", "b"))


def test_affine_without_bias_and_without_input_grad(backend: xprop.Backend) -> None:
    W = _normal(backend, (3, 2), 1)
    check_backward(Affine(W, None), _normal(backend, (4, 3), 0), params=("W",))
    first = Affine(W, None, input_grad=False)
    first.forward(_normal(backend, (4, 3), 0))
    assert (
        first.backward(backend.xp.ones((4, 2), dtype=backend.dtype, device=backend.device)) is None
    )
    assert tuple(first.dW.shape) == (3, 2)


@SETTINGS
@given(n=dims, c=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_softmax_with_loss_integer_labels(
    backend: xprop.Backend, n: int, c: int, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, c, n)
    check_backward(SoftmaxWithLoss(), (_normal(backend, (n, c), seed), backend.asarray(labels)))


def test_softmax_with_loss_one_hot_equals_integer(backend: xprop.Backend) -> None:
    x = _normal(backend, (4, 3), 7)
    labels = np.array([0, 2, 1, 2])
    hot = backend.asarray(np.eye(3)[labels])
    check_backward(SoftmaxWithLoss(), (x, hot), wrt=(0,))
    a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
    loss_a = float(a.forward(x, backend.asarray(labels)))
    loss_b = float(b.forward(x, hot))
    assert loss_a == pytest.approx(loss_b, rel=1e-14)
    np.testing.assert_allclose(backend.to_numpy(a.backward()), backend.to_numpy(b.backward()))


def test_softmax_with_loss_honours_dout(backend: xprop.Backend) -> None:
    x, t = _normal(backend, (5, 4), 3), backend.asarray(np.array([0, 1, 2, 3, 0]))
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    unit = backend.to_numpy(layer.backward())
    scaled = backend.to_numpy(layer.backward(2.5))
    np.testing.assert_allclose(scaled, 2.5 * unit, rtol=1e-14)
    # y - t over the batch: each row of the unit gradient sums to zero.
    np.testing.assert_allclose(unit.sum(axis=1), 0.0, atol=1e-15)
    as_array = backend.to_numpy(layer.backward(backend.asarray(2.5)))
    np.testing.assert_allclose(as_array, scaled, rtol=1e-14)


def test_softmax_with_loss_returns_backend_scalar(backend: xprop.Backend) -> None:
    loss = SoftmaxWithLoss().forward(_normal(backend, (2, 3), 0), backend.asarray([1, 2]))
    assert loss.ndim == 0
    assert type(loss) is type(backend.asarray([1.0]))


@SETTINGS
@given(n=dims, d=dims, seed=st.integers(0, 2**16))
def test_mse_loss_backward(backend: xprop.Backend, n: int, d: int, seed: int) -> None:
    check_backward(
        MSELoss(), (_normal(backend, (n, d), seed), _normal(backend, (n, d), seed + 1)), wrt=(0,)
    )
    layer = MSELoss()
    y, t = backend.asarray([0.75, 0.77]), backend.asarray([0.01, 0.99])
    assert float(layer.forward(y, t)) == pytest.approx(0.5 * (0.74**2 + 0.22**2), rel=1e-12)


def test_mul_and_add_backward(backend: xprop.Backend) -> None:
    x, y = _normal(backend, (3, 2), 0), _normal(backend, (3, 2), 1)
    check_backward(MulLayer(), (x, y))
    check_backward(AddLayer(), (x, y))


def test_book_apple(backend: xprop.Backend) -> None:
    """Book fig. 5-16: 2 apples at 100 yen with 10 % tax."""
    mul_apple, mul_tax = MulLayer(), MulLayer()
    price = mul_tax.forward(mul_apple.forward(100, 2), 1.1)
    assert price == pytest.approx(220)
    d_apple_price, d_tax = mul_tax.backward(1)
    d_apple, d_apple_num = mul_apple.backward(d_apple_price)
    assert (d_apple, d_apple_num, d_tax) == pytest.approx((2.2, 110, 200))
    # The same graph on arrays of the backend.
    arr = mul_tax.forward(mul_apple.forward(backend.asarray(100.0), backend.asarray(2.0)), 1.1)
    assert float(arr) == pytest.approx(220)


def test_book_apple_orange(backend: xprop.Backend) -> None:
    """Book fig. 5-17: 2 apples at 100, 3 oranges at 150, tax 1.1."""
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    a = lambda v: backend.asarray(float(v))  # noqa: E731
    apple_price = mul_apple.forward(a(100), a(2))
    orange_price = mul_orange.forward(a(150), a(3))
    price = mul_tax.forward(add.forward(apple_price, orange_price), a(1.1))
    d_all, d_tax = mul_tax.backward(a(1))
    d_apple_price, d_orange_price = add.backward(d_all)
    d_orange, d_orange_num = mul_orange.backward(d_orange_price)
    d_apple, d_apple_num = mul_apple.backward(d_apple_price)
    got = [float(v) for v in (price, d_apple_num, d_apple, d_orange, d_orange_num, d_tax)]
    assert got == pytest.approx([715, 110, 2.2, 3.3, 165, 650])


LAYER_CASES = {
    "Relu": (Relu, 1),
    "Sigmoid": (Sigmoid, 1),
    "Mul": (MulLayer, 2),
    "Add": (AddLayer, 2),
}


@pytest.mark.parametrize("name", [*LAYER_CASES, "Affine", "SoftmaxWithLoss", "MSELoss"])
def test_no_layer_mutates_inputs_or_dout(backend: xprop.Backend, name: str) -> None:
    x = _normal(backend, (4, 3), 0)
    x2 = _normal(backend, (4, 3), 1)
    before = [backend.to_numpy(v).copy() for v in (x, x2)]
    if name == "Affine":
        W, b = _normal(backend, (3, 2), 2), _normal(backend, (2,), 3)
        kept = [backend.to_numpy(v).copy() for v in (W, b)]
        layer = Affine(W, b)
        out = layer.forward(x)
        dout = _normal(backend, tuple(out.shape), 4)
        dout_before = backend.to_numpy(dout).copy()
        layer.backward(dout)
        np.testing.assert_array_equal(backend.to_numpy(W), kept[0])
        np.testing.assert_array_equal(backend.to_numpy(b), kept[1])
    elif name in ("SoftmaxWithLoss", "MSELoss"):
        t = backend.asarray([0, 2, 1, 1]) if name == "SoftmaxWithLoss" else x2
        layer = SoftmaxWithLoss() if name == "SoftmaxWithLoss" else MSELoss()
        layer.forward(x, t)
        dout = backend.asarray(1.5)
        dout_before = backend.to_numpy(dout).copy()
        layer.backward(dout)
    else:
        cls, arity = LAYER_CASES[name]
        layer = cls()
        out = layer.forward(*(x, x2)[:arity])
        dout = _normal(backend, tuple(out.shape), 4)
        dout_before = backend.to_numpy(dout).copy()
        layer.backward(dout)
    np.testing.assert_array_equal(backend.to_numpy(x), before[0])
    np.testing.assert_array_equal(backend.to_numpy(x2), before[1])
    np.testing.assert_array_equal(backend.to_numpy(dout), dout_before)


def test_relu_backward_does_not_touch_caller_dout(backend: xprop.Backend) -> None:
    """The book's ``dout[self.mask] = 0`` zeroes the caller's array; ours must not."""
    layer = Relu()
    layer.forward(backend.asarray([-1.0, 2.0, -3.0]))
    dout = backend.asarray([5.0, 6.0, 7.0])
    dx = layer.backward(dout)
    np.testing.assert_array_equal(backend.to_numpy(dx), [0.0, 6.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(dout), [5.0, 6.0, 7.0])


def test_sigmoid_layer_extremes_finite(backend: xprop.Backend) -> None:
    layer = Sigmoid()
    y = layer.forward(backend.asarray([-1000.0, 1000.0]))
    dx = layer.backward(backend.asarray([1.0, 1.0]))
    assert np.all(np.isfinite(backend.to_numpy(y)))
    np.testing.assert_array_equal(backend.to_numpy(dx), [0.0, 0.0])


def test_softmax_with_loss_huge_logits_finite(backend: xprop.Backend) -> None:
    layer = SoftmaxWithLoss()
    loss = float(layer.forward(backend.asarray([[1e4, 0.0], [0.0, 1e4]]), backend.asarray([1, 1])))
    assert loss == pytest.approx(1e4 / 2)
    assert np.all(np.isfinite(backend.to_numpy(layer.backward())))


# -- bad input ------------------------------------------------------------------------


def test_affine_feature_mismatch_names_both_sizes(backend: xprop.Backend) -> None:
    layer = Affine(_normal(backend, (784, 50), 0), _normal(backend, (50,), 1))
    with pytest.raises(
        ValueError, match=r"has 100 features.*W has shape \(784, 50\).*expects 784"
    ):
        layer.forward(_normal(backend, (3, 100), 2))


def test_affine_rejects_integer_images(backend: xprop.Backend) -> None:
    layer = Affine(_normal(backend, (4, 2), 0), _normal(backend, (2,), 1))
    images = backend.asarray(np.arange(8, dtype=np.uint8).reshape(2, 4))
    with pytest.raises(TypeError, match=r"Affine input x must have a floating dtype, got .*uint8"):
        layer.forward(images)


def test_softmax_with_loss_label_errors(backend: xprop.Backend) -> None:
    x = _normal(backend, (3, 4), 0)
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        SoftmaxWithLoss().forward(x, backend.asarray([0, 7, 1]))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(3,\)"):
        SoftmaxWithLoss().forward(x, backend.asarray([[0], [1], [2]]))
    # A layer that has seen good labels still catches bad ones, at either end of the range.
    layer = SoftmaxWithLoss()
    layer.forward(x, backend.asarray([0, 3, 1]))
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[-1, 2\]"):
        layer.forward(x, backend.asarray([2, -1, 1]))
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 4\].*0\.\.3"):
        layer.forward(x, backend.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match=r"one-hot labels must have the logits' shape \(3, 4\)"):
        layer.forward(x, backend.asarray(np.eye(3)))


def test_softmax_with_loss_unchecked_labels(backend: xprop.Backend) -> None:
    # check_labels=False skips the range check (no device read): an out-of-range label then
    # has an all-zero one-hot row and adds nothing to the loss, as documented.
    x = _normal(backend, (3, 4), 0)
    xh = backend.to_numpy(x)
    log_p = xh - np.log(np.sum(np.exp(xh), axis=1, keepdims=True))
    loss = SoftmaxWithLoss(check_labels=False).forward(x, backend.asarray([0, 7, 1]))
    want = -(log_p[0, 0] + log_p[2, 1]) / 3
    assert float(loss) == pytest.approx(want, rel=1e-12)


def test_mixed_backends_error(backend: xprop.Backend) -> None:
    other_name = "array_api_strict" if backend.name == "numpy" else "numpy"
    other = xprop.get_backend(other_name, dtype="float64")
    from xprop._namespace import MixedBackendError

    x = _normal(backend, (2, 3), 0)
    with pytest.raises(MixedBackendError, match="different array libraries"):
        SoftmaxWithLoss().forward(x, other.asarray([0, 1]))
    with pytest.raises(MixedBackendError, match="same backend"):
        Affine(_normal(other, (3, 2), 1), _normal(other, (2,), 2)).forward(x)


def test_softmax_with_loss_keeps_the_logits_dtype(backend32: xprop.Backend) -> None:
    """float64 one-hot labels must not turn a float32 network's gradient float64."""
    be = backend32
    x = be.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    hot = be.asarray(np.eye(3)[[0, 2, 1, 1]], dtype="float64") if be.name != "jax" else None
    if hot is None:
        pytest.skip("jax without x64 has no float64 labels to mix in")
    layer = SoftmaxWithLoss()
    assert layer.forward(x, hot).dtype == be.dtype
    assert layer.backward().dtype == be.dtype
