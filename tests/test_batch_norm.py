"""BatchNormalization: gradients against numerical ones (float64, every backend), the book's
forward, backward and running statistics transcribed with NumPy, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xprop
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


def test_single_sample_batch_is_finite(backend: xprop.Backend) -> None:
    layer = _layer(backend, 3)
    out = backend.to_numpy(layer.forward(_normal(backend, (1, 3), 0)))
    np.testing.assert_allclose(out, backend.to_numpy(layer.beta)[None, :])


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
