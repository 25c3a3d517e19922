"""Shapes, on every backend: gradients in their input's shape, empty batches, layer order.

Broadcasting inputs of ``MulLayer``/``AddLayer`` get gradients summed back to their own
shapes (hypothesis draws the shapes); an empty batch is an error, never a NaN; ``backward``
before ``forward`` says so; ``Affine``'s weights, bias and ``dout`` are checked.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xprop
from xprop import (
    AddLayer,
    Affine,
    MSELoss,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    TwoLayerNet,
    check_backward,
)
from xprop import functions as F

SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _normal(be: xprop.Backend, shape: tuple[int, ...], seed: int):
    return be.asarray(np.random.default_rng(seed).standard_normal(shape))


# --------------------------------------------------------------------------------------
# Item 7: MulLayer/AddLayer with broadcasting
# --------------------------------------------------------------------------------------


@st.composite
def broadcast_pair(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast together: suffixes of one shape, some sizes set to 1."""
    out = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))

    def operand() -> tuple[int, ...]:
        rank = draw(st.integers(0, len(out)))
        dims = out[len(out) - rank :]
        return tuple(1 if draw(st.booleans()) else d for d in dims)

    return operand(), operand()


@SETTINGS
@given(shapes=broadcast_pair(), seed=st.integers(0, 2**16), layer=st.sampled_from(["mul", "add"]))
def test_broadcast_gradients_have_their_inputs_shapes(
    backend: xprop.Backend, shapes: tuple, seed: int, layer: str
) -> None:
    x_shape, y_shape = shapes
    x, y = _normal(backend, x_shape, seed), _normal(backend, y_shape, seed + 1)
    cls = MulLayer if layer == "mul" else AddLayer
    check_backward(cls(), (x, y))  # raises on a wrong shape or a wrong value
    node = cls()
    out = node.forward(x, y)
    dx, dy = node.backward(_normal(backend, tuple(out.shape), seed + 2))
    assert tuple(dx.shape) == x_shape
    assert tuple(dy.shape) == y_shape


def test_mul_issue_case(backend: xprop.Backend) -> None:
    """x (3, 2) * y (2,): dy is (2,), the column sums of dout * x."""
    x_host = np.arange(6.0).reshape(3, 2)
    y_host = np.array([2.0, -1.0])
    dout_host = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    mul, add = MulLayer(), AddLayer()
    mul.forward(backend.asarray(x_host), backend.asarray(y_host))
    dx, dy = mul.backward(backend.asarray(dout_host))
    np.testing.assert_array_equal(backend.to_numpy(dx), dout_host * y_host)
    np.testing.assert_array_equal(backend.to_numpy(dy), (dout_host * x_host).sum(axis=0))
    add.forward(backend.asarray(x_host), backend.asarray(y_host))
    dx, dy = add.backward(backend.asarray(dout_host))
    np.testing.assert_array_equal(backend.to_numpy(dx), dout_host)
    np.testing.assert_array_equal(backend.to_numpy(dy), dout_host.sum(axis=0))


def test_scalar_dout_and_python_number_inputs(backend: xprop.Backend) -> None:
    xp = backend.xp
    x_host, y_host = np.arange(6.0).reshape(3, 2), np.array([2.0, -1.0])
    mul = MulLayer()
    mul.forward(backend.asarray(x_host), backend.asarray(y_host))
    dx, dy = mul.backward(1.0)  # dout = 1 everywhere
    np.testing.assert_array_equal(backend.to_numpy(dx), np.broadcast_to(y_host, (3, 2)))
    np.testing.assert_array_equal(backend.to_numpy(dy), x_host.sum(axis=0))
    # A Python number times an array: its gradient is the sum, as a 0-d array.
    mul.forward(3.0, backend.asarray(x_host))
    d_number, d_array = mul.backward(backend.asarray(np.ones((3, 2))))
    assert d_number.ndim == 0
    assert float(d_number) == pytest.approx(x_host.sum())
    np.testing.assert_array_equal(backend.to_numpy(d_array), np.full((3, 2), 3.0))
    # A Python-number gradient for an array input is broadcast to its shape and dtype.
    add = AddLayer()
    add.forward(backend.asarray(x_host), 5.0)
    dx, d_five = add.backward(2.0)
    assert d_five == 2.0
    assert dx.dtype == backend.dtype
    np.testing.assert_array_equal(backend.to_numpy(dx), np.full((3, 2), 2.0))
    assert xp.isdtype(dx.dtype, "real floating")


def test_book_apple_returns_python_numbers() -> None:
    mul_apple, mul_tax = MulLayer(), MulLayer()
    mul_tax.forward(mul_apple.forward(100, 2), 1.1)
    d_apple_price, d_tax = mul_tax.backward(1)
    d_apple, d_apple_num = mul_apple.backward(d_apple_price)
    for value in (d_apple_price, d_tax, d_apple, d_apple_num):
        assert type(value) in (int, float)
    assert (d_apple, d_apple_num, d_tax) == pytest.approx((2.2, 110, 200))


def test_softmax_one_sample_gradient_shape(backend: xprop.Backend) -> None:
    layer = SoftmaxWithLoss()
    check_backward(layer, (_normal(backend, (5,), 0), backend.asarray(3)), wrt=(0,))
    layer.forward(_normal(backend, (5,), 0), backend.asarray(3))
    assert tuple(layer.backward().shape) == (5,)


# --------------------------------------------------------------------------------------
# Item 8: an empty batch is a clear error, never NaN or ZeroDivisionError
# --------------------------------------------------------------------------------------


def test_empty_batch(backend: xprop.Backend) -> None:
    net = TwoLayerNet(4, 3, 2, backend=backend, seed=0)
    x = backend.asarray(np.zeros((0, 4)))
    t = backend.asarray(np.zeros(0, dtype=np.int64))
    for call in (net.gradient, net.loss, net.numerical_gradient, net.accuracy):
        with pytest.raises(ValueError, match="empty batch"):
            call(x, t)
    with pytest.raises(ValueError, match="empty batch"):
        net.compile_step(0.1)(x, t)
    with pytest.raises(ValueError, match=r"empty batch: logits of shape \(0, 3\)"):
        SoftmaxWithLoss().forward(backend.zeros((0, 3)), t)
    with pytest.raises(ValueError, match=r"empty batch: probabilities of shape \(0, 3\)"):
        F.cross_entropy_error(backend.zeros((0, 3)), t)
    with pytest.raises(ValueError, match=r"empty batch"):
        F.cross_entropy_error(backend.zeros((0, 3)), backend.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"empty predictions of shape \(0, 3\)"):
        F.mean_squared_error(backend.zeros((0, 3)), backend.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"empty predictions of shape \(0,\)"):
        MSELoss().forward(backend.zeros(0), backend.zeros(0))
    # Predicting on no samples is well defined: no scores.
    assert tuple(net.predict(x).shape) == (0, 2)


# --------------------------------------------------------------------------------------
# backward before forward, and dout of the wrong shape
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        MulLayer,
        AddLayer,
        Relu,
        Sigmoid,
        SoftmaxWithLoss,
        MSELoss,
        "Affine",
    ],
    ids=lambda m: m if isinstance(m, str) else m.__name__,
)
def test_backward_before_forward(backend: xprop.Backend, make: object) -> None:
    layer = Affine(backend.zeros((3, 2)), backend.zeros(2)) if make == "Affine" else make()
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"{name}.backward was called before .*forward first"):
        layer.backward(backend.zeros((4, 2)))


def test_dout_of_the_wrong_shape(backend: xprop.Backend) -> None:
    x = _normal(backend, (4, 3), 0)
    for layer in (Relu(), Sigmoid()):
        layer.forward(x)
        with pytest.raises(ValueError, match=r"dout has shape \(3, 3\) but the output .*\(4, 3\)"):
            layer.backward(_normal(backend, (3, 3), 1))
    affine = Affine(_normal(backend, (3, 2), 2), _normal(backend, (2,), 3))
    affine.forward(x)
    with pytest.raises(ValueError, match=r"Affine.backward: dout has shape \(5, 2\).*\(4, 2\)"):
        affine.backward(_normal(backend, (5, 2), 4))
    with pytest.raises(TypeError, match=r"dout must be an array of the output's shape \(4, 2\)"):
        affine.backward(1.0)
    for loss, t in ((SoftmaxWithLoss(), backend.asarray([0, 1, 2, 0])), (MSELoss(), x)):
        loss.forward(x, t)
        with pytest.raises(ValueError, match=r"dout is the gradient .* scalar loss"):
            loss.backward(backend.zeros((4, 3)))


# --------------------------------------------------------------------------------------
# Affine: weights, bias, and Affine(W, None) as a layer without bias
# --------------------------------------------------------------------------------------


def test_affine_weight_and_bias_errors(backend: xprop.Backend) -> None:
    W = _normal(backend, (3, 2), 0)
    with pytest.raises(ValueError, match=r"weights W must have shape \(D, M\), got .*\(3,\)"):
        Affine(_normal(backend, (3,), 0))
    with pytest.raises(ValueError, match=r"bias b must have shape \(2,\) .*got \(3,\)"):
        Affine(W, _normal(backend, (3,), 1))
    with pytest.raises(ValueError, match=r"bias b must have shape \(2,\) .*got \(1, 2\)"):
        Affine(W, _normal(backend, (1, 2), 1))
    with pytest.raises(TypeError, match=r"Affine weights W must have a floating dtype"):
        Affine(backend.asarray(np.ones((3, 2), dtype=np.int64)))
    with pytest.raises(TypeError, match="input_grad must be True or False"):
        Affine(W, input_grad="no")  # type: ignore[arg-type]
    # A bias swapped for a wrong one after construction is caught at the next forward.
    layer = Affine(W, _normal(backend, (2,), 1))
    layer.forward(_normal(backend, (4, 3), 2))
    layer.b = _normal(backend, (5,), 3)
    with pytest.raises(ValueError, match=r"bias b must have shape \(2,\)"):
        layer.forward(_normal(backend, (4, 3), 2))


def test_affine_without_bias_is_one_path(backend: xprop.Backend) -> None:
    W = _normal(backend, (3, 2), 0)
    x = _normal(backend, (4, 3), 1)
    for layer in (Affine(W, None), Affine(W)):
        assert layer.b is None
        out = layer.forward(x)
        np.testing.assert_allclose(
            backend.to_numpy(out), backend.to_numpy(x) @ backend.to_numpy(W), rtol=1e-12
        )
        layer.backward(_normal(backend, (4, 2), 2))
        assert layer.db is None  # no bias, no bias gradient
