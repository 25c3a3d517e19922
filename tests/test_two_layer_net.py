"""TwoLayerNet: backprop against numerical gradients, agreement across backends, training."""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import TwoLayerNet

# Small enough for numerical gradients on every backend, big enough to mean something.
SIZES = (12, 6, 4)


def _batch(be: xprop.Backend, n: int = 3, seed: int = 5) -> tuple:
    rng = np.random.default_rng(seed)
    return be.asarray(rng.random((n, SIZES[0]))), be.asarray(rng.integers(0, SIZES[2], n))


def test_gradient_matches_numerical_gradient(backend: xprop.Backend) -> None:
    """The book's gradient check (ch. 5.7.3): mean |difference| per parameter <= 1e-7."""
    net = TwoLayerNet(*SIZES, weight_init_std=0.5, backend=backend, seed=0)
    x, t = _batch(backend)
    numeric = net.numerical_gradient(x, t)
    analytic = net.gradient(x, t)
    xp = backend.xp
    for key in ("W1", "b1", "W2", "b2"):
        assert tuple(analytic[key].shape) == tuple(net.params[key].shape)
        diff = float(xp.mean(xp.abs(analytic[key] - numeric[key])))
        assert diff <= 1e-7, f"{key}: mean |backprop - numerical| = {diff:.3g}"
        # And the gradient is not trivially zero.
        assert float(xp.max(xp.abs(analytic[key]))) > 1e-4


def test_gradient_with_one_hot_labels_and_images(backend: xprop.Backend) -> None:
    net = TwoLayerNet(2 * 2 * 3, 5, 4, weight_init_std="he", backend=backend, seed=1)
    rng = np.random.default_rng(3)
    images = backend.asarray(rng.random((3, 1, 4, 3)))
    labels = np.array([0, 3, 1])
    g_int = net.gradient(images, backend.asarray(labels))
    g_hot = net.gradient(images, backend.asarray(np.eye(4)[labels]))
    for key in g_int:
        np.testing.assert_allclose(backend.to_numpy(g_int[key]), backend.to_numpy(g_hot[key]))


def test_cross_backend_agreement(backend: xprop.Backend, numpy_backend: xprop.Backend) -> None:
    """Same seed and batch: float64 gradients equal NumPy's within 1e-12 relative."""
    sizes = (20, 10, 5)
    rng = np.random.default_rng(11)
    x_host, t_host = rng.random((8, sizes[0])), rng.integers(0, sizes[2], 8)
    net = TwoLayerNet(*sizes, backend=backend, seed=7)
    ref = TwoLayerNet(*sizes, backend=numpy_backend, seed=7)
    for key in net.params:  # bit-identical initial weights from the host generator
        np.testing.assert_array_equal(backend.to_numpy(net.params[key]), ref.params[key])
    got = net.gradient(backend.asarray(x_host), backend.asarray(t_host))
    want = ref.gradient(numpy_backend.asarray(x_host), numpy_backend.asarray(t_host))
    for key in want:
        g, w = backend.to_numpy(got[key]), want[key]
        rel = np.max(np.abs(g - w)) / np.max(np.abs(w))
        assert rel <= 1e-12, f"{key}: relative difference {rel:.3g} from numpy"


def test_same_seed_bit_identical_float32_weights(backend32: xprop.Backend) -> None:
    net = TwoLayerNet(784, 50, 10, backend=backend32, seed=123)
    ref = TwoLayerNet(784, 50, 10, backend="numpy", seed=123)
    for key in ("W1", "W2"):
        np.testing.assert_array_equal(backend32.to_numpy(net.params[key]), ref.params[key])
    assert float(np.std(ref.params["W1"])) == pytest.approx(0.01, rel=0.02)


def test_book_update_loop_trains_on_every_backend(backend32: xprop.Backend) -> None:
    """``params[k] -= lr * grad[k]`` must reach the layers, also with immutable arrays."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 3
    labels = rng.integers(0, 3, 90)
    x = backend32.asarray(centers[labels] + rng.standard_normal((90, 10)) * 0.5)
    t = backend32.asarray(labels)
    net = TwoLayerNet(10, 8, 3, weight_init_std=0.1, backend=backend32, seed=0)
    first_loss = float(net.loss(x, t))
    w1_before = backend32.to_numpy(net.params["W1"]).copy()
    for _ in range(50):
        grad = net.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.5 * grad[key]
    assert not np.array_equal(backend32.to_numpy(net.layers["Affine1"].W), w1_before)
    assert float(net.loss(x, t)) < 0.2 * first_loss
    assert net.accuracy(x, t) > 0.95


def test_compiled_sgd_step_matches_book_loop(backend32: xprop.Backend) -> None:
    x, t = _batch(backend32, n=6)
    a = TwoLayerNet(*SIZES, backend=backend32, seed=2)
    b = TwoLayerNet(*SIZES, backend=backend32, seed=2)
    loss = a.compile_step(0.1)(x, t)
    assert loss.ndim == 0
    grad = b.gradient(x, t)
    for key in ("W1", "b1", "W2", "b2"):
        b.params[key] -= 0.1 * grad[key]
    for key in a.params:
        np.testing.assert_allclose(
            backend32.to_numpy(a.params[key]),
            backend32.to_numpy(b.params[key]),
            rtol=1e-5,
            atol=1e-8,  # float32 rounding of lr * grad, taken in another order
        )


def test_accuracy(backend: xprop.Backend) -> None:
    net = TwoLayerNet(*SIZES, backend=backend, seed=0)
    x, _ = _batch(backend, n=7)
    predicted = backend.to_numpy(backend.xp.argmax(net.predict(x), axis=1))
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % SIZES[2]
    acc = net.accuracy(x, backend.asarray(labels), batch_size=3)
    assert isinstance(acc, float)
    assert acc == pytest.approx(4 / 7)
    assert net.accuracy(x, backend.asarray(np.eye(SIZES[2])[labels])) == pytest.approx(4 / 7)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="hidden_size must be an integer of at least 1, got 0"):
        TwoLayerNet(4, 0, 2)
    with pytest.raises(ValueError, match="unknown weight_init_std 'lecun'"):
        TwoLayerNet(4, 3, 2, weight_init_std="lecun")
    with pytest.raises(xprop.BackendError, match="unknown backend"):
        TwoLayerNet(4, 3, 2, backend="nope")


def test_init_schemes() -> None:
    he = TwoLayerNet(400, 300, 10, weight_init_std="he", seed=0, backend="numpy")
    xavier = TwoLayerNet(400, 300, 10, weight_init_std="xavier", seed=0, backend="numpy")
    assert float(np.std(he.params["W1"])) == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert float(np.std(xavier.params["W2"])) == pytest.approx(np.sqrt(1 / 300), rel=0.05)
