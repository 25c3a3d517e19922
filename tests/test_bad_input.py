"""Bad input where it enters, on every backend: a clear error naming the value and the fix.

Python lists, data of another floating dtype than the network's, unvalidated numbers
(learning rates, sizes, initial scales): each raises ``TypeError`` or ``ValueError`` with
a message that says what was wrong and what to do, and nothing is changed on the way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xprop
from xprop import AddLayer, Affine, MulLayer, Relu, SoftmaxWithLoss, TwoLayerNet
from xprop import functions as F

SIZES = (6, 4, 3)


def _data(be: xprop.Backend, n: int = 5) -> tuple:
    rng = np.random.default_rng(0)
    return be.asarray(rng.random((n, SIZES[0]))), be.asarray(rng.integers(0, SIZES[2], n))


# --------------------------------------------------------------------------------------
# Python lists
# --------------------------------------------------------------------------------------


def test_python_lists_name_the_fix(backend: xprop.Backend) -> None:
    net = TwoLayerNet(*SIZES, backend=backend, seed=0)
    x, t = _data(backend)
    rows = [[0.5] * SIZES[0]] * 2
    match = r"expected arrays, got a Python list; convert it first with backend\.asarray"
    for call in (
        lambda: net.predict(rows),
        lambda: net.loss(rows, [0, 1]),
        lambda: net.loss(x[:2, ...], [0, 1]),
        lambda: net.gradient(x[:2, ...], [0, 1]),
        lambda: net.accuracy(x[:2, ...], [0, 1]),
        lambda: Affine(backend.zeros((6, 2))).forward(rows),
        lambda: SoftmaxWithLoss().forward([[0.1, 0.2]], t[:1]),
        lambda: Relu().forward([1.0, -1.0]),
        lambda: F.softmax([1.0, 2.0]),
        lambda: F.one_hot([0, 1], 3),
        lambda: F.cross_entropy_error([[0.5, 0.5]], [0]),
        lambda: MulLayer().forward([1.0, 2.0], 3),  # would repeat the list three times
        lambda: AddLayer().forward([1.0], [2.0]),  # would join the lists
    ):
        with pytest.raises(TypeError, match=match):
            call()
    with pytest.raises(TypeError, match=r"labels t must be an array, got int 3"):
        SoftmaxWithLoss().forward(x, 3)
    with pytest.raises(TypeError, match=r"must be an array, got float"):
        F.mean_squared_error(x, 0.5)


# --------------------------------------------------------------------------------------
# One dtype rule: the network's parameters decide
# --------------------------------------------------------------------------------------


@pytest.fixture
def other_precision(backend32: xprop.Backend) -> xprop.Backend:
    """The float64 backend of the same library and device as ``backend32``."""
    try:
        return xprop.get_backend(backend32.name, device=backend32.device, dtype="float64")
    except xprop.BackendError as exc:
        pytest.skip(f"{backend32.describe()} has no float64 twin: {exc}")


def test_data_of_another_float_dtype_is_an_error(
    backend32: xprop.Backend, other_precision: xprop.Backend
) -> None:
    net32 = TwoLayerNet(*SIZES, backend=backend32, seed=0)
    net64 = TwoLayerNet(*SIZES, backend=other_precision, seed=0)
    x32, t = _data(backend32)
    x64, t64 = _data(other_precision)
    before = {k: backend32.to_numpy(v).copy() for k, v in net32.params.items()}
    fix = r"convert the input first, with backend\.asarray\(x\) .*xp\.astype\(x, xp\.float32\)"
    for call in (
        lambda: net32.predict(x64),
        lambda: net32.loss(x64, t),
        lambda: net32.gradient(x64, t),
        lambda: net32.compile_step(0.1)(x64, t),
        lambda: net32.accuracy(x64, t),
    ):
        with pytest.raises(
            TypeError, match=rf"input x has dtype float64 but the layer's W is.*{fix}"
        ):
            call()
    with pytest.raises(TypeError, match=r"has dtype float32 but the layer's W is float64"):
        net64.predict(x32)
    for key, value in net32.params.items():  # the failed step changed nothing
        np.testing.assert_array_equal(backend32.to_numpy(value), before[key])
    # Labels are not data: integer labels of any integer dtype and one-hot labels of any
    # floating dtype are fine (one-hot labels are cast to the scores' dtype).
    labels = backend32.to_numpy(t)
    hot64 = other_precision.asarray(np.eye(SIZES[2])[labels])
    small = backend32.asarray(labels.astype(np.uint8))
    assert net32.loss(x32, hot64).dtype == backend32.dtype
    want = float(net32.loss(x32, t))
    assert float(net32.loss(x32, hot64)) == pytest.approx(want, rel=1e-6)
    assert float(net32.loss(x32, small)) == pytest.approx(want, rel=1e-6)
    assert float(net64.loss(x64, t64)) > 0


def test_affine_bias_and_dout_follow_the_weights(
    backend32: xprop.Backend, other_precision: xprop.Backend
) -> None:
    W = backend32.zeros((3, 2))
    with pytest.raises(TypeError, match=r"bias b has dtype float64 but W has float32"):
        Affine(W, other_precision.zeros(2))
    layer = Affine(W, backend32.zeros(2))
    layer.forward(backend32.zeros((4, 3)))
    with pytest.raises(TypeError, match=r"dout has dtype float64 but the layer is float32"):
        layer.backward(other_precision.zeros((4, 2)))


# --------------------------------------------------------------------------------------
# Item 9: unvalidated numbers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lr", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (0.0, ValueError),
        (-0.1, ValueError),
        ("0.1", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_sgd_step_rejects_bad_learning_rates(
    backend32: xprop.Backend, lr: object, error: type
) -> None:
    net = TwoLayerNet(*SIZES, backend=backend32, seed=0)
    x, t = _data(backend32)
    before = {k: backend32.to_numpy(v).copy() for k, v in net.params.items()}
    with pytest.raises(error, match="learning rate"):
        net.compile_step(lr)(x, t)  # type: ignore[arg-type]
    with pytest.raises(error, match="learning rate"):
        xprop.SGD(lr)  # type: ignore[arg-type]
    for key, value in net.params.items():  # no weight turned into NaN
        np.testing.assert_array_equal(backend32.to_numpy(value), before[key])
    net.compile_step(0.1)(x, t)
    assert all(np.all(np.isfinite(backend32.to_numpy(v))) for v in net.params.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden_size": True}, TypeError, "hidden_size must be an integer, got bool"),
        ({"hidden_size": 5.0}, TypeError, "hidden_size must be an integer, got float"),
        ({"hidden_size": "5"}, TypeError, "hidden_size must be an integer, got str"),
        ({"input_size": 0}, ValueError, "input_size must be an integer of at least 1, got 0"),
        ({"output_size": -3}, ValueError, "output_size must be an integer of at least 1"),
        ({"weight_init_std": math.inf}, ValueError, "finite and positive, got inf"),
        ({"weight_init_std": math.nan}, ValueError, "finite and positive, got nan"),
        ({"weight_init_std": 0}, ValueError, "finite and positive, got 0"),
        ({"weight_init_std": -0.01}, ValueError, "finite and positive"),
        ({"weight_init_std": None}, TypeError, "weight_init_std must be a number .*got NoneType"),
        ({"weight_init_std": True}, TypeError, "weight_init_std must be a number"),
        ({"weight_init_std": "lecun"}, ValueError, "unknown weight_init_std 'lecun'"),
        ({"check_labels": "yes"}, TypeError, "check_labels must be True or False"),
    ],
)
def test_constructor_rejects(
    backend32: xprop.Backend, kwargs: dict, error: type, match: str
) -> None:
    args = {"input_size": 6, "hidden_size": 4, "output_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        TwoLayerNet(**args, backend=backend32)


def test_numpy_numbers_are_sizes_and_scales(backend32: xprop.Backend) -> None:
    net = TwoLayerNet(
        np.int64(6), np.int32(4), np.uint8(3), np.float64(0.5), backend=backend32, seed=0
    )
    assert {k: tuple(v.shape) for k, v in net.params.items()} == {
        "W1": (6, 4),
        "b1": (4,),
        "W2": (4, 3),
        "b2": (3,),
    }
    assert float(np.std(backend32.to_numpy(net.params["W1"]))) == pytest.approx(0.5, rel=0.5)
    x, t = _data(backend32)
    assert float(net.loss(x, t)) > 0
