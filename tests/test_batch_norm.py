"""BatchNormalization: gradients against numerical ones (float64, every backend), the book's
forward, backward and running statistics transcribed with NumPy, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xprop
import xprop.nets.network
from xprop import BatchNormalization
from xprop.gradcheck import check_backward

SETTINGS = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _normal(be: xprop.Backend, shape: tuple[int, ...], seed: int, scale: float = 1.0):
    return be.asarray(np.random.default_rng(seed).standard_normal(shape) * scale)


def _layer(be: xprop.Backend, d: int, seed: int = 1, **kwargs) -> BatchNormalization:
    rng = np.random.default_rng(seed)
    gamma = be.asarray(rng.random(d) + 0.5)
    beta = be.asarray(rng.standard_normal(d))
    return BatchNormalization(gamma, beta, **kwargs)


# -- the book's layer (common/layers.py), transcribed with NumPy: the reference ------------


class BookBatchNorm:
    def __init__(self, gamma, beta, momentum=0.9):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean = self.running_var = None

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc**2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + 10e-7)
        return (self.gamma * xn + self.beta).reshape(self.input_shape)

    def backward(self, dout):
        dout = dout.reshape(dout.shape[0], -1)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        return (dxc - dmu / self.batch_size).reshape(self.input_shape)


# -- gradients ----------------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(2, 6), d=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_backward_in_training(backend: xprop.Backend, n: int, d: int, seed: int) -> None:
    host = np.random.default_rng(seed).standard_normal((n, d)) * 2.0
    # A feature whose batch variance is far below eps = 1e-6 (two near-equal samples) is
    # normalized by a function so curved that central differences see a kink there.
    assume(host.var(axis=0).min() > 0.01)
    layer = _layer(backend, d, seed + 1)
    x = backend.asarray(host)
    result = check_backward(layer, x, params=("gamma", "beta"))
    assert set(result.max_abs_error) == {"x0", "gamma", "beta"}


def test_backward_on_4d_input(backend: xprop.Backend) -> None:
    layer = _layer(backend, 2 * 3 * 2)
    x = _normal(backend, (4, 2, 3, 2), 0)
    out = layer.forward(x)
    assert tuple(out.shape) == (4, 2, 3, 2)
    check_backward(layer, x, params=("gamma", "beta"))


def test_backward_in_inference(backend: xprop.Backend) -> None:
    layer = _layer(backend, 3)
    layer.running_mean = _normal(backend, (3,), 5)
    layer.running_var = backend.asarray(np.array([0.5, 2.0, 3.0]))

    def forward(x):
        return layer.forward(x, train_flg=False)

    def backward(dout, x):
        return layer.backward(dout)

    check_backward(forward, _normal(backend, (4, 3), 0), backward)


# -- the book's numbers -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 5), (6, 2, 2, 2)])
def test_matches_the_book(backend: xprop.Backend, shape: tuple[int, ...]) -> None:
    d = int(np.prod(shape[1:]))
    rng = np.random.default_rng(7)
    gamma, beta = rng.random(d) + 0.5, rng.standard_normal(d)
    ours = BatchNormalization(backend.asarray(gamma), backend.asarray(beta), momentum=0.8)
    book = BookBatchNorm(gamma, beta, momentum=0.8)
    for step in range(3):
        x = rng.standard_normal(shape) * 3 + 1
        dout = rng.standard_normal(shape)
        x_dev = backend.asarray(x)
        out = ours.forward(x_dev)
        np.testing.assert_allclose(backend.to_numpy(out), book.forward(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            backend.to_numpy(ours.backward(backend.asarray(dout))),
            book.backward(dout),
            rtol=1e-9,
            atol=1e-12,
            err_msg=f"dx at step {step}",
        )
        np.testing.assert_allclose(backend.to_numpy(ours.dgamma), book.dgamma, rtol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(ours.dbeta), book.dbeta, rtol=1e-12)
        np.testing.assert_allclose(backend.to_numpy(ours.running_mean), book.running_mean)
        np.testing.assert_allclose(backend.to_numpy(ours.running_var), book.running_var)
        np.testing.assert_array_equal(backend.to_numpy(x_dev), x)  # input untouched
    # Inference uses the running statistics.
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(
        backend.to_numpy(ours.forward(backend.asarray(x), train_flg=False)),
        book.forward(x, train_flg=False),
        rtol=1e-12,
    )


def test_training_output_is_normalized(backend: xprop.Backend) -> None:
    ones, zeros = backend.asarray(np.ones(4)), backend.zeros(4)
    layer = BatchNormalization(ones, zeros)
    out = backend.to_numpy(layer.forward(_normal(backend, (50, 4), 3, scale=5.0)))
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    # Biased variance plus the book's eps: var(out) = var / (var + 1e-6), just below 1.
    assert np.all((out.var(axis=0) < 1) & (out.var(axis=0) > 1 - 1e-6))


def test_running_statistics_are_rebound_not_written(backend: xprop.Backend) -> None:
    mean0, var0 = np.full(3, 2.0), np.full(3, 4.0)
    rm, rv = backend.asarray(mean0), backend.asarray(var0)
    layer = _layer(backend, 3, running_mean=rm, running_var=rv, momentum=0.5)
    x = _normal(backend, (10, 3), 0)
    layer.forward(x)
    np.testing.assert_array_equal(backend.to_numpy(rm), mean0)  # the caller's arrays
    np.testing.assert_array_equal(backend.to_numpy(rv), var0)
    xh = backend.to_numpy(x)
    np.testing.assert_allclose(
        backend.to_numpy(layer.running_mean), 0.5 * mean0 + 0.5 * xh.mean(axis=0)
    )
    np.testing.assert_allclose(backend.to_numpy(layer.running_var), 0.5 * var0 + 0.5 * xh.var(0))
    # Inference does not touch them.
    before = backend.to_numpy(layer.running_mean).copy()
    layer.forward(x, train_flg=False)
    np.testing.assert_array_equal(backend.to_numpy(layer.running_mean), before)


def test_lazy_running_statistics_follow_the_input(backend32: xprop.Backend) -> None:
    layer = _layer(backend32, 3)
    assert layer.running_mean is None
    layer.forward(_normal(backend32, (4, 3), 0))
    assert layer.running_mean.dtype == backend32.dtype
    assert tuple(layer.running_var.shape) == (3,)


def test_network_params_rebound_reach_the_layer(backend: xprop.Backend) -> None:
    net = xprop.MultiLayerNetExtend(2, [2], 2, use_batchnorm=True, backend=backend, seed=0)
    layer = net.layers["BatchNorm1"]
    x = _normal(backend, (5, 2), 0)
    net.predict(x, train_flg=True)
    first = backend.to_numpy(layer.xn)
    # rebind, as an optimizer does on JAX: the next forward pass uses the new arrays
    net.params["gamma1"] = net.params["gamma1"] * 2.0
    net.params["beta1"] = net.params["beta1"] + 1.0
    net.predict(x, train_flg=True)
    assert layer.gamma is net.params["gamma1"]
    assert layer.beta is net.params["beta1"]
    np.testing.assert_allclose(backend.to_numpy(layer.xn), first, rtol=1e-12)


def test_training_on_one_sample_raises_and_inference_does_not(backend: xprop.Backend) -> None:
    """One sample has variance 0: training would output beta and pass back dx = 0."""
    rm, rv = backend.asarray(np.array([0.5, -1.0, 2.0])), backend.asarray(np.array([4.0, 1, 9]))
    layer = _layer(backend, 3, running_mean=rm, running_var=rv)
    x = _normal(backend, (1, 3), 0)
    with pytest.raises(ValueError, match=r"cannot train on a batch of 1 \(input shape \(1, 3\)\)"):
        layer.forward(x)
    with pytest.raises(ValueError, match="cannot train on a batch of 1"):
        layer.forward(_normal(backend, (1, 3, 1), 0), train_flg=True)
    assert layer.running_mean is rm  # nothing changed
    assert layer.running_var is rv
    assert layer.xn is None
    # Inference uses the running statistics: one sample is fine.
    out = backend.to_numpy(layer.forward(x, train_flg=False))
    g, b = backend.to_numpy(layer.gamma), backend.to_numpy(layer.beta)
    want = g * (backend.to_numpy(x) - [0.5, -1.0, 2.0]) / np.sqrt(np.array([4.0, 1, 9]) + 1e-6) + b
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_networks_and_compiled_steps_refuse_one_sample_batches(backend: xprop.Backend) -> None:
    net = xprop.MultiLayerNetExtend(3, [4], 2, use_batchnorm=True, backend=backend, seed=0)
    x, t = _normal(backend, (5, 3), 0), backend.asarray(np.array([0, 1, 1, 0, 1]))
    before = {k: backend.to_numpy(v).copy() for k, v in net.params.items()}
    stats = {k: backend.to_numpy(v).copy() for k, v in net.running_stats().items()}
    with pytest.raises(ValueError, match="cannot train on a batch of 1"):
        net.gradient(x[:1, ...], t[:1])
    step = net.compile_step(xprop.Adam())
    with pytest.raises(ValueError, match="cannot train on a batch of 1"):
        step(x[:1, ...], t[:1])
    with pytest.raises(ValueError, match="cannot train on a batch of 1"):
        step.run(x, t, np.array([[0], [1]]))
    for k, v in net.params.items():
        np.testing.assert_array_equal(backend.to_numpy(v), before[k], err_msg=k)
    for k, v in net.running_stats().items():
        np.testing.assert_array_equal(backend.to_numpy(v), stats[k], err_msg=k)
    # Inference on one sample still works, and a batch of 2 trains.
    assert tuple(net.predict(x[:1, ...]).shape) == (1, 2)
    assert np.isfinite(float(step(x[:2, ...], t[:2])))


def test_trainer_refuses_a_batch_of_one_with_batch_norm(backend: xprop.Backend) -> None:
    x, t = _normal(backend, (6, 3), 0), backend.asarray(np.array([0, 1, 1, 0, 1, 0]))
    bn = xprop.MultiLayerNetExtend(3, [4], 2, use_batchnorm=True, backend=backend, seed=0)
    for compiled in (True, False):
        with pytest.raises(ValueError, match=r"batches of 1 sample.*\(BatchNorm1\).*>= 2"):
            xprop.Trainer(bn, x, t, x, t, mini_batch_size=1, verbose=False, compiled=compiled)
    plain = xprop.MultiLayerNetExtend(3, [4], 2, backend=backend, seed=0)
    trainer = xprop.Trainer(plain, x, t, x, t, epochs=1, mini_batch_size=1, verbose=False)
    trainer.train()
    assert len(trainer.train_loss_list) == 6  # a batch of one is fine without BatchNorm


def test_backward_before_forward_is_a_runtime_error(backend: xprop.Backend) -> None:
    dout = _normal(backend, (2, 3), 0)
    alone = _layer(backend, 3)
    with pytest.raises(RuntimeError, match=r"backward was called before BatchNormalization\.forw"):
        alone.backward(dout)
    inside = _layer(backend, 3)
    inside.checks = False  # as in a network, after its first layer
    with pytest.raises(RuntimeError, match=r"backward was called before BatchNormalization\.forw"):
        inside.backward(dout)
    net = xprop.MultiLayerNetExtend(3, [3], 2, use_batchnorm=True, backend=backend, seed=0)
    with pytest.raises(RuntimeError, match=r"called before BatchNormalization\.forward"):
        net.layers["BatchNorm1"].backward(dout)


# -- float16: statistics in float32 ----------------------------------------------------------


def _half(backend: xprop.Backend) -> xprop.Backend:
    try:
        return xprop.get_backend(backend.name, device=backend.device, dtype="float16")
    except xprop.BackendError as exc:
        pytest.skip(f"{backend.name} has no float16: {exc}")


def test_float16_statistics_do_not_overflow(backend: xprop.Backend) -> None:
    """|x - mu| > 256 overflows x**2 in float16 (65504): the statistics are float32."""
    be = _half(backend)
    rng = np.random.default_rng(3)
    host = (rng.standard_normal((16, 4)) * [1.0, 300.0, 2000.0, 0.01]).astype(np.float16)
    gamma = (rng.random(4) + 0.5).astype(np.float16)
    beta = rng.standard_normal(4).astype(np.float16)
    dout = rng.standard_normal((16, 4)).astype(np.float16)
    layer = BatchNormalization(be.asarray(gamma), be.asarray(beta), momentum=0.5)
    out = layer.forward(be.asarray(host))
    dx = layer.backward(be.asarray(dout))
    for result in (out, dx, layer.dgamma, layer.dbeta):
        assert result.dtype == be.dtype
    assert layer.running_var.dtype == be.xp.float32  # made on the first pass, in float32

    book = BookBatchNorm(gamma.astype(np.float64), beta.astype(np.float64), momentum=0.5)
    x64 = host.astype(np.float64)
    want = book.forward(x64)
    want_dx = book.backward(dout.astype(np.float64))
    rv = be.to_numpy(layer.running_var).astype(np.float64)
    assert np.all(np.isfinite(rv))
    # The variance of feature 2 (~4e6) exceeds float16's range: kept in float32.
    assert rv[2] > 65504
    np.testing.assert_allclose(rv, book.running_var, rtol=1e-5)
    np.testing.assert_allclose(be.to_numpy(layer.running_mean), book.running_mean, rtol=1e-5)
    np.testing.assert_allclose(be.to_numpy(out).astype(np.float64), want, rtol=2e-3, atol=4e-3)
    np.testing.assert_allclose(be.to_numpy(dx).astype(np.float64), want_dx, rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(
        be.to_numpy(layer.dgamma).astype(np.float64), book.dgamma, rtol=2e-3, atol=2e-2
    )
    # Inference with those statistics: every feature normalized, none stuck at beta.
    inf = be.to_numpy(layer.forward(be.asarray(host), train_flg=False)).astype(np.float64)
    np.testing.assert_allclose(inf, book.forward(x64, train_flg=False), rtol=2e-3, atol=4e-3)
    assert np.all(inf.std(axis=0) > 0.3)


def test_float16_network_trains_with_finite_statistics(backend: xprop.Backend) -> None:
    """The issue's case shortened: MultiLayerNetExtend with BatchNorm, float16 inputs large
    enough that the first layer's outputs lie more than 256 from their mean (x**2 past
    float16's 65504: a running variance of inf before).  SGD: float16 Adam has its own
    trouble with tiny gradients (eps = 1e-8 is 0 in float16)."""
    be16 = _half(backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 20)) * 100.0
    t = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)  # 3 classes
    nets, results = {}, {}
    for name, be in (("float16", be16), ("float64", backend)):
        net = xprop.MultiLayerNetExtend(20, [30, 30], 3, use_batchnorm=True, backend=be, seed=1)
        stats = net.running_stats()
        assert all(
            v.dtype == (be.xp.float32 if name == "float16" else be.dtype) for v in stats.values()
        )
        xs, ts = be.asarray(x.astype(name)), be.asarray(t)
        step = net.compile_step(xprop.SGD(lr=0.1))
        batches = np.random.default_rng(1).integers(0, 200, (20, 50))
        losses = be.to_numpy(step.run(xs, ts, batches)).astype(np.float64)
        nets[name] = net
        results[name] = (
            losses,
            {k: be.to_numpy(v).astype(np.float64) for k, v in net.running_stats().items()},
            net.accuracy(xs, ts),
        )
    losses16, stats16, acc16 = results["float16"]
    losses64, stats64, acc64 = results["float64"]
    assert np.all(np.isfinite(losses16))
    for key, value in stats16.items():
        assert np.all(np.isfinite(value)), key
    net64 = xprop.MultiLayerNetExtend(20, [30, 30], 3, backend=backend, seed=1)
    a = x @ backend.to_numpy(net64.params["W1"])  # the first BatchNorm's input at the start
    assert np.abs(a - a.mean(axis=0)).max() > 256  # its square overflows float16
    np.testing.assert_allclose(stats16["running_var1"], stats64["running_var1"], rtol=2e-2)
    np.testing.assert_allclose(losses16, losses64, rtol=5e-2, atol=5e-2)
    assert losses64[-5:].mean() < losses64[:5].mean() - 0.2  # it learns
    assert abs(acc16 - acc64) <= 0.03


def test_errors(numpy_backend) -> None:
    be = numpy_backend
    layer = _layer(be, 3)
    with pytest.raises(
        ValueError, match=r"gamma has shape \(3,\) but the input .* has 4 features"
    ):
        layer.forward(be.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"must be a batch of shape \(N, D\).*got shape \(3,\)"):
        layer.forward(be.zeros(3))
    with pytest.raises(TypeError, match="input x must have a floating dtype, got int64"):
        layer.forward(be.asarray(np.ones((2, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        _layer(be, 3, momentum=1.5)
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\], got 'x'"):
        _layer(be, 3, momentum="x")
    odd = _layer(be, 3, running_mean=be.zeros(2))
    with pytest.raises(ValueError, match=r"running_mean has shape \(2,\) but the input has 3"):
        odd.forward(be.zeros((2, 3)))


class _EncoderDecoder(xprop.nets.network.Network):
    """Two BatchNorm layers whose names end in the same digit (enc_bn1, dec_bn1)."""

    def __init__(self, be: xprop.Backend, lazy: bool = False) -> None:
        super().__init__(be, seed=0)
        self.input_size = 4
        p = self.params
        p["W1"], p["b1"] = self.rng.normal((4, 6), scale=0.5), be.zeros(6)
        p["g1"], p["c1"] = be.asarray(np.ones(6)), be.zeros(6)
        p["W2"], p["b2"] = self.rng.normal((6, 5), scale=0.5), be.zeros(5)
        p["g2"], p["c2"] = be.asarray(np.ones(5)), be.zeros(5)
        p["W3"], p["b3"] = self.rng.normal((5, 3), scale=0.5), be.zeros(3)
        stats = {} if lazy else {"running_mean": be.zeros(6), "running_var": be.zeros(6)}
        self.layers["enc1"] = xprop.Affine(p["W1"], p["b1"])
        self.layers["enc_bn1"] = xprop.BatchNormalization(p["g1"], p["c1"], **stats)
        self.layers["dec1"] = xprop.Affine(p["W2"], p["b2"])
        stats = {} if lazy else {"running_mean": be.zeros(5), "running_var": be.zeros(5)}
        self.layers["dec_bn1"] = xprop.BatchNormalization(p["g2"], p["c2"], **stats)
        self.layers["out"] = xprop.Affine(p["W3"], p["b3"])
        self.last_layer = xprop.SoftmaxWithLoss()
        self.link({"enc1": ("W1", "b1"), "enc_bn1": ("g1", "c1"), "dec1": ("W2", "b2"),
                   "dec_bn1": ("g2", "c2"), "out": ("W3", "b3")})  # fmt: skip


def test_statistics_of_two_layers_never_share_a_key(backend: xprop.Backend, tmp_path) -> None:
    """``enc_bn1`` and ``dec_bn1`` both became ``running_mean1``: a checkpoint kept one
    layer's statistics and loaded them into both, and a compiled step overwrote one layer's
    with the other's.  Each layer's own key; a reload gives the same logits; the compiled
    step keeps both apart."""
    be = backend
    rng = np.random.default_rng(3)
    x, t = be.asarray(rng.standard_normal((16, 4)) * 3), be.asarray(rng.integers(0, 3, 16))
    net = _EncoderDecoder(be)
    assert sorted(net.running_stats()) == [
        "dec_bn1.running_mean", "dec_bn1.running_var",
        "enc_bn1.running_mean", "enc_bn1.running_var",
    ]  # fmt: skip
    step = net.compile_step(xprop.SGD(0.1))
    book, book_opt = _EncoderDecoder(be), xprop.SGD(0.1)
    for _ in range(3):
        step(x, t)
        book_opt.update(book.params, book.gradient(x, t))
    stats, want = net.running_stats(), book.running_stats()
    assert tuple(stats["enc_bn1.running_mean"].shape) == (6,)
    assert tuple(stats["dec_bn1.running_mean"].shape) == (5,)
    for key in want:
        got, ref = be.to_numpy(stats[key]), be.to_numpy(want[key])  # means near 0: atol
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=key)
    path = tmp_path / "ed.safetensors"
    net.save_params(path)
    again = _EncoderDecoder(be)
    again.load_params(path)
    np.testing.assert_array_equal(be.to_numpy(again.predict(x)), be.to_numpy(net.predict(x)))


def test_statistics_made_lazily_are_named_on_save_and_taken_on_load(numpy_backend, tmp_path):
    be = numpy_backend
    lazy = _EncoderDecoder(be, lazy=True)
    with pytest.raises(xprop.CheckpointError, match=r"running statistics \[.*\] do not exist yet"):
        lazy.save_params(tmp_path / "lazy.safetensors")
    x = be.asarray(np.random.default_rng(0).standard_normal((8, 4)))
    made = _EncoderDecoder(be, lazy=True)
    made.predict(x, train_flg=True)  # makes (and moves) the statistics
    made.save_params(tmp_path / "made.safetensors")
    lazy.load_params(tmp_path / "made.safetensors")  # the file's statistics are taken
    np.testing.assert_array_equal(lazy.predict(x), made.predict(x))
