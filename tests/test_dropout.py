"""Dropout: the book's semantics, gradients with a fixed mask (float64, every backend), the
same masks on every backend for one seed (host and device masks), and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import Dropout
from xprop.gradcheck import check_backward


def _normal(be: xprop.Backend, shape: tuple[int, ...], seed: int):
    return be.asarray(np.random.default_rng(seed).standard_normal(shape))


def test_backward_with_a_fixed_mask(backend: xprop.Backend) -> None:
    layer = Dropout(0.4, seed=3)
    with layer.fixed_mask():
        result = check_backward(layer, _normal(backend, (5, 4), 0))
    assert result.max_abs_error["x0"] < 1e-8


def test_training_pass_is_the_books(backend: xprop.Backend) -> None:
    """Keep where uniform > ratio, no rescaling; masks from the seeded host generator."""
    x = _normal(backend, (20, 30), 0)
    layer = Dropout(0.3, seed=11)
    out = backend.to_numpy(layer.forward(x))
    keep = np.random.default_rng(11).random((20, 30)) > 0.3  # what the book draws
    np.testing.assert_array_equal(out, backend.to_numpy(x) * keep)
    np.testing.assert_array_equal(backend.to_numpy(layer.mask), keep.astype(float))
    dout = _normal(backend, (20, 30), 1)
    np.testing.assert_array_equal(
        backend.to_numpy(layer.backward(dout)), backend.to_numpy(dout) * keep
    )
    # The next pass draws the next mask of the same stream.
    layer.forward(x)
    rng = np.random.default_rng(11)
    rng.random((20, 30))
    np.testing.assert_array_equal(backend.to_numpy(layer.mask), rng.random((20, 30)) > 0.3)


def test_inference_scales_by_the_keep_ratio(backend: xprop.Backend) -> None:
    x = _normal(backend, (3, 4), 0)
    layer = Dropout(0.25, seed=0)
    np.testing.assert_allclose(
        backend.to_numpy(layer.forward(x, train_flg=False)), 0.75 * backend.to_numpy(x)
    )
    np.testing.assert_allclose(
        backend.to_numpy(layer.backward(x)), 0.75 * backend.to_numpy(x)
    )  # the gradient of that scaling


def test_float32_and_float64_share_masks(backend32: xprop.Backend) -> None:
    a, b = Dropout(0.5, seed=4), Dropout(0.5, seed=4)
    a.forward(backend32.zeros((6, 7)))
    b.forward(xprop.get_backend("numpy", dtype="float64").zeros((6, 7)))
    assert a.mask.dtype == backend32.dtype
    np.testing.assert_array_equal(backend32.to_numpy(a.mask), b.mask)


def test_fixed_mask_reuses_one_mask(backend: xprop.Backend) -> None:
    layer = Dropout(0.5, seed=0)
    x = _normal(backend, (8, 8), 0)
    with layer.fixed_mask():
        first = backend.to_numpy(layer.forward(x))
        np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), first)
        # Another shape cannot reuse it: a new one is drawn and kept.
        layer.forward(_normal(backend, (2, 8), 1))
        assert tuple(layer.mask.shape) == (2, 8)
    assert not np.array_equal(backend.to_numpy(layer.forward(x)), first)


# -- device masks ---------------------------------------------------------------------------


def _lowbias32(h: np.ndarray) -> np.ndarray:
    """The reference hash in unsigned 32-bit arithmetic."""
    h = h.astype(np.uint64)
    m = np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & m
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & m
    h ^= h >> np.uint64(16)
    return h


def test_device_masks_are_the_documented_hash_on_every_backend(backend32) -> None:
    shape, ratio, seed = (16, 50), 0.3, 9
    layer = Dropout(ratio, seed=seed, device_masks=True)
    layer.forward(backend32.zeros(shape))
    got = backend32.to_numpy(layer.mask)
    k1, k2 = (int(k) % 2**32 for k in np.random.default_rng(seed).integers(-(2**31), 2**31, 2))
    index = np.arange(16 * 50, dtype=np.uint64)
    h = _lowbias32(_lowbias32(index ^ np.uint64(k1)) ^ np.uint64(k2))
    keep = ((h >> np.uint64(8)) / 2**24) > ratio
    np.testing.assert_array_equal(got, keep.reshape(shape).astype(np.float32))


def test_device_masks_keep_the_right_fraction(numpy_backend) -> None:
    layer = Dropout(0.2, seed=0, device_masks=True)
    x = numpy_backend.asarray(np.ones((400, 500)))
    first = layer.forward(x)
    assert abs(first.mean() - 0.8) < 0.005  # 200000 draws: the std is 0.0009
    second = layer.forward(x)
    assert 0.3 < np.mean(first != second) < 0.34  # independent masks: 2 * 0.8 * 0.2 differ


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1.0, -0.1, "0.5", True, float("nan")])
def test_bad_ratio(ratio) -> None:
    with pytest.raises(ValueError, match=r"dropout_ratio must be a number in \[0, 1\)"):
        Dropout(ratio)


def test_numpy_scalar_ratio(numpy_backend) -> None:
    layer = Dropout(np.float32(0.25), seed=0)
    assert type(layer.dropout_ratio) is float
    x = numpy_backend.asarray(np.ones((2, 2)))
    np.testing.assert_array_equal(layer.forward(x, train_flg=False), 0.75)


def test_bad_input_and_generator(numpy_backend) -> None:
    with pytest.raises(TypeError, match="Dropout input x must have a floating dtype"):
        Dropout(0.5, seed=0).forward(numpy_backend.asarray(np.ones((2, 2), dtype=np.int64)))
    with pytest.raises(TypeError, match=r"generator must be a numpy\.random\.Generator"):
        Dropout(0.5, generator=42)


def test_backward_before_forward_is_a_runtime_error(backend: xprop.Backend) -> None:
    dout = _normal(backend, (2, 3), 0)
    alone = Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match=r"Dropout\.backward was called before Dropout\.forw"):
        alone.backward(dout)
    net = xprop.MultiLayerNetExtend(3, [3], 2, use_dropout=True, backend=backend, seed=0)
    inside = net.layers["Dropout1"]
    assert not inside.checks  # inside a network, after the first layer: no input checks
    with pytest.raises(RuntimeError, match=r"Dropout\.backward was called before Dropout\.forw"):
        inside.backward(dout)
    # After a forward pass it is the book's dout * mask.
    x = _normal(backend, (2, 3), 1)
    out = inside.forward(x)
    np.testing.assert_array_equal(
        backend.to_numpy(inside.backward(dout)),
        backend.to_numpy(dout) * (backend.to_numpy(out) != 0),
    )
