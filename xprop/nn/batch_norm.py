"""Batch normalization (ch. 6.3, Ioffe and Szegedy, arXiv:1502.03167), the book's layer.

Training: each feature is normalized with the statistics of the batch and then scaled and
shifted by learnt ``gamma`` and ``beta``; running averages of the statistics are kept for
inference.  Written against the array API: it runs unchanged on every backend.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from xprop.checks import check_fraction
from xprop.nn.layer import Layer
from xprop.typing import Array, Namespace

__all__ = ["BatchNormalization", "wide_dtype"]

# The book's epsilon under the square root (10e-7 = 1e-6), kept for identical numbers.
EPS = 10e-7


class BatchNormalization(Layer):
    """``out = gamma * (x - mean) / sqrt(var + 10e-7) + beta``, feature by feature.

    Parameters
    ----------
    gamma, beta : array
        Scale and shift of shape ``(D,)``, floating (the book starts them at 1 and 0).
    momentum : float
        Weight of the old value in the running statistics, in ``[0, 1]`` (the book's 0.9):
        ``running = momentum * running + (1 - momentum) * batch``.
    running_mean, running_var : array, optional
        Running statistics of shape ``(D,)``; default: zeros created on the first forward
        pass in the input's dtype (float32 for float16 input) and device (the book's
        choice, variance included).

    Notes
    -----
    ``forward(x, train_flg=True)`` takes ``x`` of shape ``(N, D)``, or ``(N, C, H, W)`` (any
    ``(N, d1, ...)``) which is flattened to ``(N, C*H*W)`` as the book does: each of the
    ``C*H*W`` features has its own statistics and ``gamma``/``beta`` entry.  In training
    (``train_flg=True``) it uses the batch mean ``mu`` and biased variance ``var`` (divided
    by ``N``) and updates the running statistics; in inference it uses the running ones.

    ``backward(dout)`` sets ``dgamma = sum(dout * xn, axis=0)`` and
    ``dbeta = sum(dout, axis=0)`` (``xn`` the normalized input) and returns, after a
    training forward pass,

    ``dx = gamma / (N * std) * (N * dout - dbeta - xn * dgamma)``,

    the book's staged backward collapsed into one expression (derivation in the docs,
    "Training techniques"); after an inference forward pass the statistics are constants
    and ``dx = gamma * dout / std``.

    float16 input: the statistics, the normalization and the backward pass are computed in
    float32 and the results (output, ``dx``, ``dgamma``, ``dbeta``) cast back to float16, as
    PyTorch does; a float16 ``x**2`` would overflow for ``|x| > 256`` (a running variance of
    ``inf``, and those features stuck at ``beta`` at inference).  Running statistics given
    in float16 are updated in float32 and cast back.

    A training pass needs at least 2 samples: the variance of one is 0 (the output would be
    ``beta`` and ``dx`` 0), so a batch of 1 raises ``ValueError``; inference takes any batch.

    The running statistics are *not* parameters: they are attributes of the layer, rebound
    (never written in place) at each training step, so arrays passed in are never modified.
    """

    param_names = ("gamma", "beta")
    buffer_names = ("running_mean", "running_var")
    takes_train_flg = True

    def __init__(
        self,
        gamma: Array,
        beta: Array,
        momentum: float = 0.9,
        running_mean: Array | None = None,
        running_var: Array | None = None,
    ) -> None:
        self.gamma = gamma
        self.beta = beta
        self.momentum = check_fraction(momentum, "BatchNormalization momentum", closed=True)
        self.input_shape: tuple[int, ...] | None = None  # conv layers: 4-D, fully connected: 2-D

        # mean and variance for inference
        self.running_mean = running_mean
        self.running_var = running_var

        # intermediate data for backward
        self.batch_size: int | None = None
        self.train_flg = True  # the mode of the last forward pass
        self.xn: Array = None
        self.std: Array = None
        self.dgamma: Array = None
        self.dbeta: Array = None

    def forward(self, x: Array, train_flg: bool = True) -> Array:
        """Normalize ``x`` (``(N, D)`` or ``(N, d1, ...)``); returns an array of its shape.

        Raises ``ValueError`` for a training pass on a batch of one sample
        (:func:`check_input`).
        """
        xp = check_input(self, x, train_flg)
        self.input_shape = tuple(x.shape)
        features = self.gamma.shape[0]  # not -1: an empty batch has a shape too
        x = xp.reshape(x, (x.shape[0], features)) if x.ndim != 2 else x
        out_dtype, wide = x.dtype, wide_dtype(xp, x.dtype)
        if self.running_mean is None or self.running_var is None:
            zeros = xp.zeros(x.shape[1:], dtype=wide or out_dtype, device=device(x))
            self.running_mean = zeros if self.running_mean is None else self.running_mean
            self.running_var = zeros if self.running_var is None else self.running_var
        gamma, beta = self.gamma, self.beta
        if wide is not None:
            # float16 overflows at 65504: x**2 does so for |x| > 256.  Statistics and
            # normalization are computed in float32 and the results cast back, as PyTorch
            # and cuDNN do for half precision.
            x, gamma, beta = (xp.astype(a, wide) for a in (x, gamma, beta))

        self.train_flg = train_flg
        if train_flg:
            mu = xp.mean(x, axis=0)
            xc = x - mu
            var = xp.mean(xc**2, axis=0)  # biased (divided by N), as the book and the paper
            std = xp.sqrt(var + EPS)
            self.batch_size = x.shape[0]
            # Rebound, not written in place: running arrays passed in stay untouched.
            self.running_mean = _running(xp, self.momentum, self.running_mean, mu)
            self.running_var = _running(xp, self.momentum, self.running_var, var)
        else:
            xc = x - xp.astype(self.running_mean, x.dtype, copy=False)
            std = xp.sqrt(xp.astype(self.running_var, x.dtype, copy=False) + EPS)
        xn = xc / std
        self.xn, self.std = xn, std  # float32 for float16 input: backward computes there
        out = gamma * xn + beta
        if wide is not None:
            out = xp.astype(out, out_dtype)
        return out if len(self.input_shape) == 2 else xp.reshape(out, self.input_shape)

    def backward(self, dout: Array) -> Array:
        """``dx`` of the input's shape; sets ``dgamma`` and ``dbeta`` (shape ``(D,)``).

        All three in the input's dtype.  Raises ``RuntimeError`` before any forward pass.
        """
        self.require_forward(self.xn)  # also inside a network, where the checks are off
        xp = self.check_dout(dout, self.input_shape)
        dout = xp.reshape(dout, (dout.shape[0], self.xn.shape[1])) if dout.ndim != 2 else dout
        xn, std, gamma, out_dtype = self.xn, self.std, self.gamma, dout.dtype
        if xn.dtype != out_dtype:  # float16: the forward pass kept float32 (see forward)
            dout, gamma = xp.astype(dout, xn.dtype), xp.astype(gamma, xn.dtype)
        dbeta = xp.sum(dout, axis=0)
        dgamma = xp.sum(xn * dout, axis=0)
        if self.train_flg:
            n = self.batch_size
            # The book's chain dxn -> dxc, dstd -> dvar -> dxc, dmu -> dx in one line:
            # dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) / std, dxn = gamma * dout.
            dx = (gamma / (n * std)) * (n * dout - dbeta - xn * dgamma)
        else:
            dx = (gamma / std) * dout  # fixed statistics: an elementwise affine map
        if xn.dtype != out_dtype:
            dx, dgamma, dbeta = (xp.astype(a, out_dtype) for a in (dx, dgamma, dbeta))
        self.dgamma, self.dbeta = dgamma, dbeta
        shape = self.input_shape  # known: require_forward passed
        return dx if shape is None or len(shape) == 2 else xp.reshape(dx, shape)


def check_input(layer: BatchNormalization, x: Array, train_flg: bool) -> Namespace:
    """What ``layer.forward(x, train_flg)`` needs; ``x``'s namespace.

    Used alone (``layer.checks``), the layer checks ``x`` as every layer does and that it
    has one ``gamma`` entry (and running statistic) per feature.  Always: a training pass
    needs at least two samples (the batch variance of one is 0, so the output would be
    ``beta`` and the input's gradient 0), also inside a network and a compiled step.
    """
    xp = layer.check_input(x, layer.gamma, owner="the layer's gamma")
    if layer.checks:
        check_per_feature(layer, x, ("gamma", "beta", "running_mean", "running_var"))
    if train_flg and x.shape[0] < 2:
        raise ValueError(
            f"BatchNormalization cannot train on a batch of {x.shape[0]} (input shape "
            f"{tuple(x.shape)}): the batch variance of one sample is 0, so the "
            "output would be beta and the input's gradient 0; train with at least 2 "
            "samples per batch (mini_batch_size >= 2), or pass train_flg=False"
        )
    return xp


def check_per_feature(layer: Any, x: Array, names: tuple[str, ...]) -> None:
    """Raise unless each array ``layer.<name>`` (``None``: not made yet) has one value per
    feature of ``x`` ``(N, d1, ...)``, i.e. shape ``(d1 * ...,)``."""
    features = math.prod(x.shape[1:])
    for name in names:
        p = getattr(layer, name)
        if p is None or tuple(p.shape) == (features,):
            continue
        found = f"BatchNormalization {name} has shape {tuple(p.shape)} but the input "
        if name in ("gamma", "beta"):
            raise ValueError(
                f"{found}(shape {tuple(x.shape)}) has {features} features per sample; build "
                f"{name} with shape ({features},)"
            )
        raise ValueError(
            f"{found}has {features} features; pass running statistics of shape ({features},)"
        )


def wide_dtype(xp: Namespace, dtype: Any) -> Any:
    """float32 for float16 (whose statistics would overflow), else ``None``.

    The dtype BatchNormalization computes and keeps its statistics in for inputs of
    ``dtype``: float16 has a largest value of 65504, which ``x**2`` passes for
    ``|x| > 256``; a network builds its running statistics in this dtype.
    """
    half = getattr(xp, "float16", None)
    return xp.float32 if half is not None and dtype == half else None


def _running(xp: Namespace, m: float, running: Any, batch: Any) -> Array:
    """``m * running + (1 - m) * batch`` in ``batch``'s dtype, cast to ``running``'s."""
    if running.dtype == batch.dtype:
        return m * running + (1 - m) * batch
    return xp.astype(m * xp.astype(running, batch.dtype) + (1 - m) * batch, running.dtype)
