"""Activation and loss functions: values, stability (warnings are errors), bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xprop
from xprop import functions as F


def test_sigmoid_values_and_extremes(backend: xprop.Backend) -> None:
    x = backend.asarray([-1000.0, -40.0, -20.0, 0.0, 2.0, 1000.0])
    y = backend.to_numpy(F.sigmoid(x))
    want = [
        0.0,
        1 / (1 + math.exp(40.0)),
        1 / (1 + math.exp(20.0)),
        0.5,
        1 / (1 + math.exp(-2.0)),
        1.0,
    ]
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(y))


def test_relu(backend: xprop.Backend) -> None:
    y = F.relu(backend.asarray([-2.0, 0.0, 3.5]))
    np.testing.assert_array_equal(backend.to_numpy(y), [0.0, 0.0, 3.5])


def test_softmax_rows_sum_to_one_any_leading_dims(backend: xprop.Backend) -> None:
    host = np.random.default_rng(0).standard_normal((2, 3, 5)) * 3
    y = backend.to_numpy(F.softmax(backend.asarray(host)))
    want = np.exp(host) / np.exp(host).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-12)


def test_softmax_and_log_softmax_huge_logits(backend: xprop.Backend) -> None:
    x = backend.asarray([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    y = backend.to_numpy(F.softmax(x))
    np.testing.assert_allclose(y, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], atol=1e-300)
    logy = backend.to_numpy(F.log_softmax(x))
    np.testing.assert_allclose(
        logy, [[0.0, -1e4, -2e4], [-math.log(2), -math.log(2), -1e4 - math.log(2)]]
    )
    assert np.all(np.isfinite(logy))


def test_cross_entropy_matches_book_and_labels_forms(backend: xprop.Backend) -> None:
    # The book's example (ch. 4.2.2): y for the "2" class is 0.6 -> 0.5108...
    y = backend.asarray([[0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]])
    hot = backend.asarray([[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]], dtype="float64")
    by_index = float(F.cross_entropy_error(y, backend.asarray([2])))
    by_hot = float(F.cross_entropy_error(y, hot))
    assert by_index == pytest.approx(-math.log(0.6), rel=1e-12)
    assert by_hot == pytest.approx(-math.log(0.6), rel=1e-12)


def test_cross_entropy_zero_probability_is_finite(backend: xprop.Backend) -> None:
    y = backend.asarray([[1.0, 0.0], [0.5, 0.5]])
    loss = float(F.cross_entropy_error(y, backend.asarray([1, 0])))
    tiny = np.finfo(np.float64).tiny
    assert loss == pytest.approx((-math.log(tiny) + math.log(2)) / 2, rel=1e-12)


def test_mean_squared_error_book_value(backend: xprop.Backend) -> None:
    t = backend.asarray([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype="float64")
    y = backend.asarray([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert float(F.mean_squared_error(y, t)) == pytest.approx(0.0975, rel=1e-12)
    batch = F.mean_squared_error(
        backend.asarray([[1.0, 2.0], [3.0, 5.0]]), backend.asarray([[1.0, 0.0], [3.0, 4.0]])
    )
    assert float(batch) == pytest.approx(0.5 * (4.0 + 1.0) / 2)


def test_one_hot(backend: xprop.Backend) -> None:
    hot = F.one_hot(backend.asarray([2, 0, 1]), 3, backend.dtype)
    np.testing.assert_array_equal(backend.to_numpy(hot), np.eye(3)[[2, 0, 1]])
    assert hot.dtype == backend.dtype


def test_label_errors(backend: xprop.Backend) -> None:
    y = backend.asarray(np.full((3, 4), 0.25))
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 4\].*0\.\.3"):
        F.cross_entropy_error(y, backend.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels out of range.*\[-1, 1\]"):
        F.one_hot(backend.asarray([-1, 1]), 4)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(3,\)"):
        F.cross_entropy_error(y, backend.asarray([0, 1]))
    with pytest.raises(
        ValueError, match=r"one-hot labels must have the probabilities' shape \(3, 4\)"
    ):
        F.cross_entropy_error(y, backend.asarray(np.ones((3, 5))))
    with pytest.raises(ValueError, match="targets must have the predictions' shape"):
        F.mean_squared_error(y, backend.asarray(np.ones((3, 5))))


# Every torch function that makes a new tensor from host values or from nothing.
_TORCH_MAKERS = (
    "asarray", "as_tensor", "tensor", "scalar_tensor", "full", "zeros", "ones", "empty",
    "arange", "full_like", "zeros_like", "ones_like", "empty_like",
)  # fmt: skip


@pytest.mark.parametrize("labels", ["indices", "one-hot"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_functions_make_no_tensor_once_their_constants_exist(monkeypatch, labels, dtype):
    """A repeated call makes no tensor: no Python number reaches a torch function.

    array-api-compat turns a Python number passed to ``xp.maximum`` (or ``where``, ``clip``)
    into a new tensor on the other argument's device at every call: on CUDA a blocking
    host-to-device copy per step, and an error inside a CUDA-graph capture.  The first call
    may make the cached constants (:mod:`xprop._constants`); the second must make nothing.
    """
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    be = xprop.get_backend("torch", device="cpu", dtype=dtype)
    rng = np.random.default_rng(0)
    p = rng.random((4, 3)) + 0.1
    y = be.asarray(p / p.sum(axis=1, keepdims=True))
    y = y * be.asarray([[1.0, 0.0, 1.0]] * 4)  # zero probabilities: the floor is used
    idx = be.asarray(np.array([0, 2, 1, 0]))
    t = idx if labels == "indices" else be.asarray(np.eye(3)[[0, 2, 1, 0]])
    target = be.asarray(rng.standard_normal((4, 3)))

    made: list[str] = []
    for name in _TORCH_MAKERS:
        original = getattr(torch, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            if not (args and out is args[0]):  # asarray of a tensor hands the tensor back
                made.append(_name)
            return out

        monkeypatch.setattr(torch, name, counted)

    def step() -> list[object]:
        return [
            F.cross_entropy_error(y, t),
            F.cross_entropy_error(y[0], t[0]),
            F.one_hot(idx, 3, be.dtype),
            F.relu(target),
            F.sigmoid(target),
            F.softmax(target),
            F.log_softmax(target),
            F.mean_squared_error(y, target),
        ]

    first = step()
    made.clear()
    second = step()
    assert made == [], f"tensors made by a repeated call: {made}"
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(be.to_numpy(a), be.to_numpy(b))
    assert np.isfinite(be.to_numpy(first[0]))
