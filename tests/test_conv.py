"""Convolution, Pooling, im2col and col2im against a NumPy transcription of the book's code.

The reference below follows the book's ``common/util.py`` and ``common/layers.py`` (loops,
``np.pad``, ``np.add.at``-free col2im with ``+=`` on slices, ``argmax``); its pooling pads
with ``-inf`` and counts the padding in the output size, as xprop defines pooling's pad
(the book pads with zeros and leaves it out, which only agrees for ``pad == 0``).
"""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import Convolution, Pooling, col2im, im2col
from xprop.backend import to_numpy
from xprop.gradcheck import check_backward

# --- the book's code, transcribed (NumPy, float64) ---------------------------------------


def book_im2col(x, fh, fw, stride=1, pad=0, value=0.0):
    N, C, H, W = x.shape
    oh = (H + 2 * pad - fh) // stride + 1
    ow = (W + 2 * pad - fw) // stride + 1
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant", constant_values=value)
    col = np.zeros((N, C, fh, fw, oh, ow))
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            col[:, :, y, xx, :, :] = img[:, :, y:y_max:stride, xx:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * oh * ow, -1)


def book_col2im(col, input_shape, fh, fw, stride=1, pad=0):
    N, C, H, W = input_shape
    oh = (H + 2 * pad - fh) // stride + 1
    ow = (W + 2 * pad - fw) // stride + 1
    col = col.reshape(N, oh, ow, C, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1))
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            img[:, :, y:y_max:stride, xx:x_max:stride] += col[:, :, y, xx, :, :]
    return img[:, :, pad : H + pad, pad : W + pad]


def book_conv(x, W, b, dout, stride, pad):
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh = 1 + (H + 2 * pad - FH) // stride
    ow = 1 + (Wd + 2 * pad - FW) // stride
    col = book_im2col(x, FH, FW, stride, pad)
    col_W = W.reshape(FN, -1).T
    out = (np.dot(col, col_W) + b).reshape(N, oh, ow, -1).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    db = np.sum(d, axis=0)
    dW = np.dot(col.T, d).transpose(1, 0).reshape(FN, C, FH, FW)
    dx = book_col2im(np.dot(d, col_W.T), x.shape, FH, FW, stride, pad)
    return out, dx, dW, db


def book_pool(x, ph, pw, dout, stride, pad):
    N, C, H, W = x.shape
    oh = (H + 2 * pad - ph) // stride + 1
    ow = (W + 2 * pad - pw) // stride + 1
    col = book_im2col(x, ph, pw, stride, pad, value=-np.inf).reshape(-1, ph * pw)
    arg_max = np.argmax(col, axis=1)
    out = np.max(col, axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1)
    dmax = np.zeros((d.size, ph * pw))
    dmax[np.arange(arg_max.size), arg_max.flatten()] = d.flatten()
    dcol = dmax.reshape((*d.shape, ph * pw)).reshape(N * oh * ow, -1)
    return out, book_col2im(dcol, x.shape, ph, pw, stride, pad)


# --- helpers -----------------------------------------------------------------------------


def _np(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _close(got, want):
    got = to_numpy(got)
    scale = max(float(np.max(np.abs(want))), 1e-300)
    assert got.shape == want.shape
    assert float(np.max(np.abs(got - want))) <= 1e-12 * scale


# (N, C, H, W), (FN, FH, FW), stride, pad
CONV_CASES = [
    ((2, 3, 5, 6), (2, 3, 3), 1, 0),
    ((1, 1, 7, 5), (3, 2, 3), 2, 1),
    ((2, 2, 6, 7), (1, 3, 2), 3, 2),
    ((1, 3, 4, 4), (2, 1, 1), 1, 2),
    ((2, 1, 7, 7), (2, 5, 4), 2, 0),
]


@pytest.mark.parametrize(("xs", "ws", "stride", "pad"), CONV_CASES)
def test_convolution_equals_book(backend: xprop.Backend, xs, ws, stride, pad) -> None:
    FN, FH, FW = ws
    x, W, b = _np(0, xs), _np(1, (FN, xs[1], FH, FW)), _np(2, (FN,))
    layer = Convolution(backend.asarray(W), backend.asarray(b), stride, pad)
    out = layer.forward(backend.asarray(x))
    dout = _np(3, tuple(out.shape))
    want_out, want_dx, want_dW, want_db = book_conv(x, W, b, dout, stride, pad)
    _close(out, want_out)
    dx = layer.backward(backend.asarray(dout))
    _close(dx, want_dx)
    _close(layer.dW, want_dW)
    _close(layer.db, want_db)
    _close(im2col(backend.asarray(x), FH, FW, stride, pad), book_im2col(x, FH, FW, stride, pad))


# (N, C, H, W), (PH, PW), stride, pad
POOL_CASES = [
    ((2, 3, 6, 6), (2, 2), 2, 0),  # the book's networks: stride == window
    ((1, 2, 7, 5), (2, 2), 2, 0),  # rows and a column the windows do not reach
    ((2, 1, 6, 7), (3, 2), 1, 1),
    ((1, 3, 7, 7), (3, 3), 3, 2),
    ((2, 2, 5, 6), (2, 3), 2, 1),
]


@pytest.mark.parametrize(("xs", "ps", "stride", "pad"), POOL_CASES)
def test_pooling_equals_book(backend: xprop.Backend, xs, ps, stride, pad) -> None:
    x = _np(0, xs)
    layer = Pooling(*ps, stride=stride, pad=pad)
    out = layer.forward(backend.asarray(x))
    dout = _np(3, tuple(out.shape))
    want_out, want_dx = book_pool(x, *ps, dout, stride, pad)
    _close(out, want_out)
    _close(layer.backward(backend.asarray(dout)), want_dx)


@pytest.mark.parametrize(("stride", "pad"), [(2, 0), (1, 0), (1, 1)])
def test_pooling_ties_exactly_as_book(backend: xprop.Backend, stride, pad) -> None:
    # after ReLU: many zeros, whole windows equal, and repeated maxima
    x = np.maximum(np.round(_np(5, (2, 2, 6, 6))), 0.0)
    x[0, 0] = 1.0  # every window all-equal
    layer = Pooling(2, 2, stride=stride, pad=pad)
    out = layer.forward(backend.asarray(x))
    dout = _np(6, tuple(out.shape))
    want_out, want_dx = book_pool(x, 2, 2, dout, stride, pad)
    dx = to_numpy(layer.backward(backend.asarray(dout)))
    assert np.array_equal(to_numpy(out), want_out)
    if stride == 2:
        assert np.array_equal(dx, want_dx)  # tiling windows: bit-identical
    else:
        _close(dx, want_dx)  # overlapping windows add in another order
    # the all-equal channel: the gradient goes to the first element of each window
    assert np.count_nonzero(dx[0, 0]) == np.count_nonzero(want_dx[0, 0])


def test_check_backward(backend: xprop.Backend) -> None:
    # small: the numerical gradient takes two forward passes per element
    W, b = backend.asarray(_np(1, (2, 2, 2, 1))), backend.asarray(_np(2, (2,)))
    x = backend.asarray(_np(0, (1, 2, 3, 4)))
    check_backward(Convolution(W, b, stride=2, pad=1), x, params=("W", "b"))
    check_backward(Pooling(2, 2, stride=2), backend.asarray(_np(4, (1, 1, 4, 5))))
    check_backward(Pooling(3, 2, stride=1, pad=1), backend.asarray(_np(7, (1, 1, 3, 3))))


def test_first_layer_needs_no_dx(backend: xprop.Backend) -> None:
    W = backend.asarray(_np(1, (2, 1, 3, 3)))
    layer = Convolution(W, None, input_grad=False)
    out = layer.forward(backend.asarray(_np(0, (1, 1, 5, 5))))
    assert layer.backward(backend.asarray(_np(3, tuple(out.shape)))) is None
    assert tuple(layer.dW.shape) == (2, 1, 3, 3)
    assert layer.db is None


@pytest.mark.parametrize(("shape", "f", "stride", "pad"), [((2, 3, 5, 6), (3, 2), 2, 1)])
def test_col2im_is_adjoint(backend: xprop.Backend, shape, f, stride, pad) -> None:
    x = _np(0, shape)
    col = im2col(backend.asarray(x), *f, stride, pad)
    c = _np(1, tuple(col.shape))
    back = col2im(backend.asarray(c), shape, *f, stride, pad)
    lhs, rhs = float(np.sum(to_numpy(col) * c)), float(np.sum(x * to_numpy(back)))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
    _close(back, book_col2im(c, shape, *f, stride, pad))


def test_bad_input(backend: xprop.Backend) -> None:
    W = backend.asarray(_np(1, (2, 3, 3, 3)))
    conv = Convolution(W, backend.asarray(_np(2, (2,))))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got shape \(3, 5, 5\)"):
        conv.forward(backend.asarray(_np(0, (3, 5, 5))))
    with pytest.raises(ValueError, match=r"has 1 channels .* expect 3"):
        conv.forward(backend.asarray(_np(0, (1, 1, 5, 5))))
    with pytest.raises(ValueError, match=r"window 3x3 is larger than the padded input 2x4"):
        conv.forward(backend.asarray(_np(0, (1, 3, 2, 4))))
    with pytest.raises(ValueError, match=r"larger than the padded input 2x2.*output size"):
        Pooling(3, 3).forward(backend.asarray(_np(0, (1, 1, 2, 2))))
    with pytest.raises(ValueError, match="shape \\(N, C, H, W\\)"):
        Pooling(2, 2, stride=2).forward(backend.asarray(_np(0, (4, 4))))
    with pytest.raises(ValueError, match="filters W must have shape"):
        Convolution(backend.asarray(_np(1, (2, 3, 3))))
    with pytest.raises(ValueError, match="bias b must have shape"):
        Convolution(W, backend.asarray(_np(2, (3,))))
    for bad, err, text in [
        (1.5, TypeError, r"stride must be an integer, got float 1\.5"),
        (0, ValueError, "stride must be an integer of at least 1, got 0"),
        (True, TypeError, "stride must be an integer"),
    ]:
        with pytest.raises(err, match=text):
            Convolution(W, stride=bad)
        with pytest.raises(err, match=text):
            Pooling(2, 2, stride=bad)
    with pytest.raises(ValueError, match="pad must be an integer of at least 0, got -1"):
        Convolution(W, pad=-1)
    with pytest.raises(TypeError, match=r"pad must be an integer, got float 1\.0"):
        im2col(backend.asarray(_np(0, (1, 1, 4, 4))), 2, 2, pad=1.0)
    with pytest.raises(ValueError, match="pad must be smaller than the window, got pad=2"):
        Pooling(2, 2, pad=2)
    with pytest.raises(ValueError, match="pool_w must be an integer of at least 1, got 0"):
        Pooling(2, 0)
    with pytest.raises(ValueError, match=r"col has shape \(3, 4\) but"):
        col2im(backend.asarray(_np(0, (3, 4))), (1, 1, 4, 4), 2, 2)
    with pytest.raises(RuntimeError, match=r"before Pooling\.forward"):
        Pooling(2, 2).backward(backend.asarray(_np(0, (1, 1, 2, 2))))


def test_pooling_on_non_finite_values_is_as_documented(backend: xprop.Backend) -> None:
    """docs/convolution.md, "Non-finite values": NaN windows send their gradient nowhere, an
    infinite dout reaches the first maximum only (never inf * 0 = NaN elsewhere), an all
    -inf window's gradient goes to its first element without padding."""
    x = np.array([[1.0, 3.0, 0.0, 0.0], [2.0, 3.0, 0.0, 0.0],
                  [np.nan, 1.0, -np.inf, -np.inf], [0.0, 5.0, -np.inf, -np.inf]])  # fmt: skip
    layer = Pooling(2, 2, stride=2)
    out = to_numpy(layer.forward(backend.asarray(x.reshape(1, 1, 4, 4))))[0, 0]
    assert out[0, 0] == 3.0
    assert np.isnan(out[1, 0])
    assert out[1, 1] == -np.inf
    dout = np.array([[np.inf, 1.0], [1.0, 2.0]]).reshape(1, 1, 2, 2)
    dx = to_numpy(layer.backward(backend.asarray(dout)))[0, 0]
    want = np.array([[0.0, np.inf, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                     [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # fmt: skip
    np.testing.assert_array_equal(dx, want)
