"""MultiLayerNet and MultiLayerNetExtend: backprop against numerical gradients in float64 with
BatchNorm, Dropout and weight decay on every backend; the exact weight-decay term; the book's
structure; training with an optimizer; errors."""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import Adam, MultiLayerNet, MultiLayerNetExtend

SIZES = (6, [5, 4], 3)


def _batch(be: xprop.Backend, n: int = 7, seed: int = 5) -> tuple:
    rng = np.random.default_rng(seed)
    return be.asarray(rng.standard_normal((n, SIZES[0]))), be.asarray(rng.integers(0, 3, n))


def _host(be: xprop.Backend, arrays: dict) -> dict:
    return {k: be.to_numpy(v).copy() for k, v in arrays.items()}


@pytest.mark.parametrize(
    "options",
    [
        {"use_batchnorm": True, "weight_decay_lambda": 0.1},
        {"use_batchnorm": True, "use_dropout": True, "dropout_ratio": 0.3},
        {"activation": "sigmoid", "weight_init_std": "xavier", "weight_decay_lambda": 0.05},
    ],
    ids=["batchnorm+decay", "batchnorm+dropout", "sigmoid+decay"],
)
def test_gradient_matches_numerical_gradient(backend: xprop.Backend, options: dict) -> None:
    """The book's check: mean |backprop - numerical| < 1e-7 for every parameter."""
    net = MultiLayerNetExtend(*SIZES, **options, backend=backend, seed=0)
    x, t = _batch(backend)
    running = _host(backend, net.running_stats())
    with net.fixed_dropout_masks():  # gradient and numerical gradient see the same masks
        analytic = net.gradient(x, t)
        after_gradient = _host(backend, net.running_stats())
        params_before = _host(backend, net.params)
        numeric = net.numerical_gradient(x, t)
    assert set(analytic) == set(numeric) == set(net.params)
    xp = backend.xp
    for key in net.params:
        assert tuple(analytic[key].shape) == tuple(net.params[key].shape)
        diff = float(xp.mean(xp.abs(analytic[key] - numeric[key])))
        assert diff < 1e-7, f"{key}: mean |backprop - numerical| = {diff:.3g}"
        if net.use_batchnorm and key in ("b1", "b2"):
            # A bias followed by BatchNorm cancels in the normalization: gradient 0.
            assert float(xp.max(xp.abs(analytic[key]))) < 1e-12
        else:
            assert float(xp.max(xp.abs(analytic[key]))) > 1e-4, f"{key} is trivially zero"
    # The check changed nothing: same parameters, running statistics as gradient() left them.
    for key, value in _host(backend, net.params).items():
        np.testing.assert_array_equal(value, params_before[key])
    for key, value in _host(backend, net.running_stats()).items():
        np.testing.assert_array_equal(value, after_gradient[key])
        assert not np.array_equal(value, running[key])  # gradient() is a training pass


def test_weight_decay_loss_term_is_exact(backend: xprop.Backend) -> None:
    lam = 0.37
    plain = MultiLayerNet(*SIZES, backend=backend, seed=3)
    decayed = MultiLayerNet(*SIZES, weight_decay_lambda=lam, backend=backend, seed=3)
    x, t = _batch(backend)
    w = [backend.to_numpy(plain.params[f"W{i}"]) for i in (1, 2, 3)]
    term = 0.5 * lam * sum(float(np.sum(wi**2)) for wi in w)
    assert term > 0.1
    got = float(decayed.loss(x, t)) - float(plain.loss(x, t))
    assert got == pytest.approx(term, rel=1e-12)
    g_plain, g_decay = plain.gradient(x, t), decayed.gradient(x, t)
    for i in (1, 2, 3):
        np.testing.assert_allclose(
            backend.to_numpy(g_decay[f"W{i}"]) - backend.to_numpy(g_plain[f"W{i}"]),
            lam * w[i - 1],
            rtol=1e-10,
            atol=1e-14,
        )
        np.testing.assert_array_equal(
            backend.to_numpy(g_decay[f"b{i}"]), backend.to_numpy(g_plain[f"b{i}"])
        )


def test_structure_is_the_books(numpy_backend) -> None:
    net = MultiLayerNetExtend(
        784, [100, 50], 10, use_batchnorm=True, use_dropout=True, backend=numpy_backend, seed=0
    )
    assert list(net.layers) == [
        "Affine1",
        "BatchNorm1",
        "Activation_function1",
        "Dropout1",
        "Affine2",
        "BatchNorm2",
        "Activation_function2",
        "Dropout2",
        "Affine3",
    ]
    shapes = {k: tuple(v.shape) for k, v in net.params.items()}
    assert shapes == {
        "W1": (784, 100),
        "b1": (100,),
        "W2": (100, 50),
        "b2": (50,),
        "W3": (50, 10),
        "b3": (10,),
        "gamma1": (100,),
        "beta1": (100,),
        "gamma2": (50,),
        "beta2": (50,),
    }
    assert set(net.running_stats()) == {
        "running_mean1",
        "running_var1",
        "running_mean2",
        "running_var2",
    }
    np.testing.assert_array_equal(net.params["gamma1"], 1.0)
    assert net.dropout_ration == net.dropout_ratio == 0.5
    plain = MultiLayerNet(784, [100], 10, backend=numpy_backend)
    assert list(plain.layers) == ["Affine1", "Activation_function1", "Affine2"]
    assert plain.running_stats() == {}


@pytest.mark.parametrize(
    ("scheme", "gain"),
    [("relu", 2.0), ("he", 2.0), ("sigmoid", 1.0), ("Xavier", 1.0), (0.01, None)],
)
def test_initial_weights(scheme, gain) -> None:
    net = MultiLayerNet(400, [300], 10, weight_init_std=scheme, backend="numpy", seed=0)
    for key, fan_in in (("W1", 400), ("W2", 300)):
        want = 0.01 if gain is None else np.sqrt(gain / fan_in)
        assert float(np.std(net.params[key])) == pytest.approx(want, rel=0.06)


def test_same_seed_same_weights_and_masks_on_every_backend(backend32: xprop.Backend) -> None:
    options = {"use_dropout": True, "use_batchnorm": True}
    net = MultiLayerNetExtend(*SIZES, **options, backend=backend32, seed=12)
    ref = MultiLayerNetExtend(*SIZES, **options, backend="numpy", seed=12)
    for key in net.params:
        np.testing.assert_array_equal(backend32.to_numpy(net.params[key]), ref.params[key])
    x, _ = _batch(backend32)
    net.predict(x, train_flg=True)
    ref.predict(backend32.to_numpy(x), train_flg=True)
    for name in ("Dropout1", "Dropout2"):
        np.testing.assert_array_equal(
            backend32.to_numpy(net.layers[name].mask), ref.layers[name].mask
        )


def test_inference_uses_running_statistics_and_scales_dropout(backend: xprop.Backend) -> None:
    net = MultiLayerNetExtend(
        *SIZES, use_batchnorm=True, use_dropout=True, dropout_ration=0.25, backend=backend, seed=1
    )
    x, _ = _batch(backend)
    for _ in range(3):
        net.predict(x, train_flg=True)
    # Inference is deterministic, and equals the layers run by hand in inference mode.
    a, b = net.predict(x), net.predict(x, train_flg=False)
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    h = x
    for name, layer in net.layers.items():
        h = layer.forward(h, False) if name.startswith(("Batch", "Drop")) else layer.forward(h)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(h), rtol=1e-12)


def test_trains_with_adam_on_every_backend(backend32: xprop.Backend) -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 2
    labels = rng.integers(0, 3, 120)
    x = backend32.asarray(centers[labels] + rng.standard_normal((120, 10)))
    t = backend32.asarray(labels)
    net = MultiLayerNetExtend(
        10, [16, 16], 3, use_batchnorm=True, weight_decay_lambda=1e-4, backend=backend32, seed=0
    )
    opt = Adam(lr=0.01)
    first = float(net.loss(x, t))
    for _ in range(80):
        opt.update(net.params, net.gradient(x, t))
    assert float(net.loss(x, t)) < 0.3 * first
    assert net.accuracy(x, t) > 0.9
    assert type(net.last_loss) is type(x)  # a 0-d array of the backend, also with decay
    assert net.last_loss.ndim == 0


def test_accuracy(backend: xprop.Backend) -> None:
    net = MultiLayerNetExtend(*SIZES, use_batchnorm=True, backend=backend, seed=0)
    x, _ = _batch(backend, n=9)
    predicted = backend.to_numpy(backend.xp.argmax(net.predict(x), axis=1))
    labels = predicted.copy()
    labels[:4] = (labels[:4] + 1) % 3
    assert net.accuracy(x, backend.asarray(labels), batch_size=4) == pytest.approx(5 / 9)
    assert net.accuracy(x, backend.asarray(np.eye(3)[labels])) == pytest.approx(5 / 9)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"hidden_size_list\[1\] must be a positive integer"):
        MultiLayerNet(4, [3, 0], 2)
    with pytest.raises(TypeError, match="hidden_size_list must be a list of positive integers"):
        MultiLayerNet(4, 3, 2)
    with pytest.raises(ValueError, match="input_size must be a positive integer, got 0"):
        MultiLayerNet(0, [3], 2)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; use 'relu' or 'sigmoid'"):
        MultiLayerNet(4, [3], 2, activation="tanh")
    with pytest.raises(
        TypeError,
        match=r"activation must be a string, 'relu' or 'sigmoid'.*"
        r"got list \['relu'\]",
    ):
        MultiLayerNet(4, [3], 2, activation=["relu"])
    with pytest.raises(TypeError, match=r"activation must be a string.*got NoneType None"):
        MultiLayerNetExtend(4, [3], 2, activation=None)
    assert MultiLayerNet(4, [3], 2, activation="Sigmoid").activation == "sigmoid"
    with pytest.raises(ValueError, match="unknown weight_init_std 'lecun'"):
        MultiLayerNet(4, [3], 2, weight_init_std="lecun")
    with pytest.raises(ValueError, match="weight_init_std must be a positive number, got -1"):
        MultiLayerNet(4, [3], 2, weight_init_std=-1)
    with pytest.raises(ValueError, match="weight_decay_lambda must be a finite number >= 0"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=-0.1)
    with pytest.raises(ValueError, match=r"dropout_ratio must be a number in \[0, 1\), got 1"):
        MultiLayerNetExtend(4, [3], 2, use_dropout=True, dropout_ratio=1)
    with pytest.raises(ValueError, match=r"dropout_ration=0\.2 and dropout_ratio=0\.3 disagree"):
        MultiLayerNetExtend(4, [3], 2, dropout_ration=0.2, dropout_ratio=0.3)
    assert (
        MultiLayerNetExtend(4, [3], 2, dropout_ration=0.2, dropout_ratio=0.2).dropout_ratio == 0.2
    )
    with pytest.raises(xprop.BackendError, match="unknown backend"):
        MultiLayerNet(4, [3], 2, backend="nope")


def test_no_hidden_layer_is_softmax_regression(backend: xprop.Backend) -> None:
    net = MultiLayerNet(SIZES[0], [], 3, weight_decay_lambda=0.1, backend=backend, seed=0)
    x, t = _batch(backend)
    numeric, analytic = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in ("W1", "b1"):
        assert float(backend.xp.mean(backend.xp.abs(analytic[key] - numeric[key]))) < 1e-7


def test_accuracy_validates_labels_as_two_layer_net_does(backend: xprop.Backend) -> None:
    """One accuracy for every network: wrong label shapes and ranges are errors, not misses."""
    net = MultiLayerNetExtend(*SIZES, use_batchnorm=True, backend=backend, seed=0)
    x, t = _batch(backend, n=8)
    acc = net.accuracy(x, t)
    scores = backend.to_numpy(net.predict(x, train_flg=False))
    want = float(np.mean(np.argmax(scores, axis=1) == backend.to_numpy(t)))
    assert acc == want
    assert net.accuracy(x, backend.asarray(backend.to_numpy(t).astype(np.uint8))) == want
    with pytest.raises(ValueError, match=r"integer labels must have shape \(8,\)"):
        net.accuracy(x, backend.asarray(backend.to_numpy(t).reshape(8, 1)))
    with pytest.raises(ValueError, match="labels out of range"):
        net.accuracy(x, backend.asarray(np.full(8, 7)))


def test_set_running_stats_checks_before_it_sets(backend: xprop.Backend) -> None:
    net = MultiLayerNetExtend(*SIZES, use_batchnorm=True, backend=backend, seed=0)
    x, _ = _batch(backend)
    net.predict(x, train_flg=True)
    saved = net.running_stats()
    host = {k: backend.to_numpy(v).copy() for k, v in saved.items()}
    key = "running_var1"
    units = host[key].shape[0]
    cases = [
        (
            ValueError,
            rf"'{key}' has shape \({units + 1},\) but the layer's has shape "
            rf"\({units},\)",
            backend.zeros(units + 1),
        ),
        (TypeError, rf"'{key}' must be an array, got list", [1.0] * units),
        (
            TypeError,
            rf"'{key}' has dtype float32 but the layer's is float64",
            backend.asarray(np.ones(units), dtype="float32"),
        ),
    ]
    if backend.name != "numpy":  # NumPy arrays on another library's network
        library = "jax" if backend.name == "jax" else backend.name
        cases.append(
            (
                TypeError,
                rf"'{key}' is a numpy array but MultiLayerNetExtend holds "
                rf"{library} arrays",
                np.ones(units),
            )
        )
    if backend.name == "array_api_strict":  # another device of the same library
        import array_api_strict

        on = array_api_strict.Device("device1")
        if backend.device == on:
            on = array_api_strict.Device("CPU_DEVICE")
        cases.append(
            (
                ValueError,
                rf"'{key}' is on device .* but MultiLayerNetExtend is on",
                array_api_strict.ones(units, dtype=backend.dtype, device=on),
            )
        )
    for error, match, value in cases:
        with pytest.raises(error, match=match):
            net.set_running_stats({**saved, "running_mean1": backend.zeros(units), key: value})
        for k, v in net.running_stats().items():  # nothing was set, not even running_mean1
            np.testing.assert_array_equal(backend.to_numpy(v), host[k], err_msg=k)
    # Arrays like the network's are taken, and used by inference.
    new = {k: backend.asarray(np.full(v.shape, 2.0)) for k, v in host.items()}
    net.set_running_stats(new)
    layer = net.layers["BatchNorm1"]
    assert layer.running_var is new["running_var1"]
    assert np.all(np.isfinite(backend.to_numpy(net.predict(x))))
