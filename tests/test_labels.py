"""Labels, on every backend: any integer dtype for any class count, one validation everywhere.

The loss layer, ``cross_entropy_error``, ``one_hot``, ``accuracy`` and ``validate_labels``
must read labels the same way: integer class indices of any integer dtype, or one-hot rows
of any floating dtype; wrong shapes, widths, ranges and kinds are errors that say what to do.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xprop
from xprop import SoftmaxWithLoss, TwoLayerNet
from xprop import functions as F

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "int64"]


def _labels(be: xprop.Backend, values, dtype: str):
    """Labels of integer ``dtype`` on the backend, or a hypothesis skip if it has none."""
    t = be.asarray(np.asarray(values, dtype=dtype))
    assume(t.dtype == getattr(be.xp, dtype, None))  # e.g. JAX without x64 has no int64
    return t


# --------------------------------------------------------------------------------------
# Item 1: small integer dtypes used to wrap around (uint8 label 5 of 300 classes: 11.41)
# --------------------------------------------------------------------------------------


@SETTINGS
@given(
    dtype=st.sampled_from(INT_DTYPES),
    c=st.integers(1, 1000),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_any_integer_dtype_any_class_count(
    backend: xprop.Backend, dtype: str, c: int, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    top = min(c, int(np.iinfo(dtype).max) + 1)  # labels the dtype can hold
    host = rng.integers(0, top, n)
    t = _labels(backend, host, dtype)
    xp = backend.xp

    # Equal logits: every class has probability 1/C, so the loss is exactly log C.
    loss = SoftmaxWithLoss().forward(backend.zeros((n, c)), t)
    assert float(loss) == pytest.approx(math.log(c), rel=1e-12, abs=1e-12)
    probs = backend.asarray(np.full((n, c), 1.0 / c))
    assert float(F.cross_entropy_error(probs, t)) == pytest.approx(math.log(c), rel=1e-12)

    hot = backend.to_numpy(F.one_hot(t, c))
    np.testing.assert_array_equal(hot, np.eye(c)[host])

    # Random logits against a NumPy reference, and the gradient's one -1 per row.
    logits = rng.standard_normal((n, c))
    layer = SoftmaxWithLoss()
    got = float(layer.forward(backend.asarray(logits), t))
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert got == pytest.approx(-log_p[np.arange(n), host].mean(), rel=1e-10)
    dx = backend.to_numpy(layer.backward()) * n
    np.testing.assert_allclose(dx, np.exp(log_p) - np.eye(c)[host], atol=1e-12)
    assert xp.isdtype(t.dtype, "integral")  # the caller's labels keep their dtype


@pytest.mark.parametrize(
    ("dtype", "values", "c", "found"),
    [
        ("uint8", [255, 0], 200, r"\[0, 255\]"),
        ("int8", [-1, 3], 10, r"\[-1, 3\]"),
        ("uint8", [5, 0], 3, r"\[0, 5\]"),
        ("int16", [300, 2], 300, r"\[2, 300\]"),
    ],
)
def test_out_of_range_small_dtypes_are_caught(
    backend: xprop.Backend, dtype: str, values: list[int], c: int, found: str
) -> None:
    t = backend.asarray(np.asarray(values, dtype=dtype))
    match = rf"labels out of range: found values in {found} but there are {c} classes"
    with pytest.raises(ValueError, match=match):
        SoftmaxWithLoss().forward(backend.zeros((2, c)), t)
    with pytest.raises(ValueError, match=match):
        F.one_hot(t, c)
    with pytest.raises(ValueError, match=match):
        F.cross_entropy_error(backend.asarray(np.full((2, c), 1.0 / c)), t)
    with pytest.raises(ValueError, match=match):
        F.validate_labels(t, c)


def test_uint8_label_of_300_classes(backend: xprop.Backend) -> None:
    """The issue's case: 11.41 and a one-hot sum of 2 before."""
    t = backend.asarray(np.array([5], dtype=np.uint8))
    loss = SoftmaxWithLoss().forward(backend.zeros((1, 300)), t)
    assert float(loss) == pytest.approx(math.log(300), rel=1e-12)
    assert float(backend.xp.sum(F.one_hot(t, 300))) == 1.0


# --------------------------------------------------------------------------------------
# Item 9: floating labels are one-hot; one_hot's arguments
# --------------------------------------------------------------------------------------


def test_float_class_indices_are_rejected(backend: xprop.Backend) -> None:
    t = backend.asarray([0.0, 1.7])
    x = backend.zeros((2, 3))
    with pytest.raises(ValueError, match=r"floating labels are read as one-hot.*integers"):
        SoftmaxWithLoss().forward(x, t)
    with pytest.raises(ValueError, match=r"floating labels are read as one-hot.*integers"):
        F.cross_entropy_error(backend.asarray(np.full((2, 3), 1 / 3)), t)
    with pytest.raises(TypeError, match=r"one_hot takes integer class indices"):
        F.one_hot(t, 3)
    with pytest.raises(ValueError, match=r"one-hot labels must have shape \(N, 3\).*integers"):
        F.validate_labels(t, 3)
    with pytest.raises(TypeError, match="labels must be integer class indices or one-hot"):
        SoftmaxWithLoss().forward(x, backend.asarray([True, False]))


@pytest.mark.parametrize(
    ("num_classes", "error", "match"),
    [
        (2.5, TypeError, "num_classes must be an integer, got float 2.5"),
        (3.0, TypeError, "num_classes must be an integer"),
        (True, TypeError, "num_classes must be an integer, got bool"),
        (0, ValueError, "num_classes must be an integer of at least 1, got 0"),
        (-2, ValueError, "at least 1"),
    ],
)
def test_one_hot_num_classes(
    backend: xprop.Backend, num_classes: object, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        F.one_hot(backend.asarray([0, 1]), num_classes)  # type: ignore[arg-type]


def test_one_hot_dtype_names_and_numpy_integers(backend: xprop.Backend) -> None:
    xp = backend.xp
    t = backend.asarray([2, 0])
    for name in ("float32", "float64", "int32", "bool"):
        hot = F.one_hot(t, np.int64(3), name)
        assert hot.dtype == getattr(xp, name)
        np.testing.assert_array_equal(backend.to_numpy(hot), np.eye(3, dtype=name)[[2, 0]])
    assert F.one_hot(t, 3, xp.float32).dtype == xp.float32
    default = xp.__array_namespace_info__().default_dtypes(device=backend.device)
    assert F.one_hot(t, 3).dtype == default["real floating"]
    with pytest.raises(TypeError, match=r"one_hot: unknown dtype 'float99'.*'float32'"):
        F.one_hot(t, 3, "float99")
    with pytest.raises(ValueError, match=r"labels must be 1-D"):
        F.one_hot(backend.asarray([[0, 1]]), 3)


def test_check_labels_is_one_keyword_and_a_bool(backend: xprop.Backend) -> None:
    t = backend.asarray([0, 5])
    probs = backend.asarray(np.full((2, 3), 1 / 3))
    # Unchecked, an out-of-range label has an all-zero row (documented), everywhere alike.
    np.testing.assert_array_equal(
        backend.to_numpy(F.one_hot(t, 3, check_labels=False)), [[1, 0, 0], [0, 0, 0]]
    )
    assert float(F.cross_entropy_error(probs, t, check_labels=False)) == pytest.approx(
        math.log(3) / 2
    )
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="check_labels must be True or False"):
            SoftmaxWithLoss(check_labels=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="check_labels must be True or False"):
            F.one_hot(t, 3, check_labels=bad)  # type: ignore[arg-type]


def test_validate_labels(backend: xprop.Backend) -> None:
    assert F.validate_labels(backend.asarray(np.array([0, 2, 1], dtype=np.uint8)), 3) is False
    assert F.validate_labels(backend.asarray(np.eye(3)), 3) is True
    assert xprop.validate_labels is F.validate_labels
    with pytest.raises(ValueError, match=r"one-hot labels must have shape \(N, 4\)"):
        F.validate_labels(backend.asarray(np.eye(3)), 4)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(N,\)"):
        F.validate_labels(backend.asarray([[0], [1]]), 3)


# --------------------------------------------------------------------------------------
# Logits' shapes: 1-D is one sample, 0-d and 3-D are errors
# --------------------------------------------------------------------------------------


def test_one_sample_logits(backend: xprop.Backend) -> None:
    x_host = np.array([0.5, -1.0, 2.0, 0.1])
    x = backend.asarray(x_host)
    batch = SoftmaxWithLoss()
    want = float(batch.forward(backend.asarray(x_host[None, :]), backend.asarray([2])))
    dx_want = backend.to_numpy(batch.backward(0.5))[0]
    for t in (backend.asarray(2), backend.asarray([2]), backend.asarray(np.eye(4)[2])):
        layer = SoftmaxWithLoss()
        assert float(layer.forward(x, t)) == pytest.approx(want, rel=1e-14)
        dx = layer.backward(0.5)
        assert tuple(dx.shape) == (4,)  # the logits' shape, not (1, 4)
        np.testing.assert_allclose(backend.to_numpy(dx), dx_want, rtol=1e-14)
        probs = backend.asarray(np.exp(x_host) / np.exp(x_host).sum())
        assert float(F.cross_entropy_error(probs, t)) == pytest.approx(want, rel=1e-12)


def test_one_sample_label_shape_messages(backend: xprop.Backend) -> None:
    x = backend.asarray([0.5, -1.0, 2.0])
    with pytest.raises(
        ValueError,
        match=r"integer label of one sample \(logits of shape \(3,\)\).*got shape \(2,\)",
    ):
        SoftmaxWithLoss().forward(x, backend.asarray([0, 1]))
    with pytest.raises(
        ValueError, match=r"one-hot labels for one sample \(logits of shape \(3,\)\).*\(3,\), got"
    ):
        SoftmaxWithLoss().forward(x, backend.asarray(np.ones(4)))


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_logits_must_be_one_or_two_dimensional(backend: xprop.Backend, shape: tuple) -> None:
    x = backend.asarray(np.ones(shape))
    t = backend.asarray(np.zeros(shape[:1], dtype=np.int64))
    found = re.escape(f"got shape {shape}")
    with pytest.raises(ValueError, match=rf"logits must have shape \(N, C\) .*{found}"):
        SoftmaxWithLoss().forward(x, t)
    with pytest.raises(ValueError, match=r"probabilities must have shape \(N, C\)"):
        F.cross_entropy_error(x, t)


# --------------------------------------------------------------------------------------
# Item 2: accuracy() validates its labels as loss does
# --------------------------------------------------------------------------------------

SIZES = (5, 4, 3)


def _net_and_batch(be: xprop.Backend, check_labels: bool = True):
    net = TwoLayerNet(*SIZES, weight_init_std=0.5, backend=be, seed=0, check_labels=check_labels)
    x = be.asarray(np.random.default_rng(1).random((8, SIZES[0])))
    predicted = be.to_numpy(be.xp.argmax(net.predict(x), axis=1))
    labels = predicted.copy()
    labels[:2] = (labels[:2] + 1) % SIZES[2]  # 6 of 8 right
    return net, x, labels


def test_accuracy_any_label_dtype(backend: xprop.Backend) -> None:
    net, x, labels = _net_and_batch(backend)
    for dtype in ("uint8", "int16", "int32", "int64"):
        t = backend.asarray(labels.astype(dtype))
        assert net.accuracy(x, t, batch_size=3) == pytest.approx(0.75)
    assert net.accuracy(x, backend.asarray(np.eye(3)[labels])) == pytest.approx(0.75)


def test_accuracy_rejects_bad_labels(backend: xprop.Backend) -> None:
    net, x, labels = _net_and_batch(backend)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(8,\).*got \(8, 1\)"):
        net.accuracy(x, backend.asarray(labels[:, None]))
    with pytest.raises(ValueError, match=r"got \(8, 3, 1\)"):
        net.accuracy(x, backend.asarray(np.eye(3, dtype=np.int64)[labels][:, :, None]))
    with pytest.raises(ValueError, match=r"one-hot labels must have the scores' shape \(8, 3\)"):
        net.accuracy(x, backend.asarray(np.eye(4)[labels]))
    seven = labels.copy()
    seven[0] = 7
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        net.accuracy(x, backend.asarray(seven))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(8,\).*got \(7,\)"):
        net.accuracy(x, backend.asarray(labels[:7]))
    with pytest.raises(ValueError, match="empty batch"):
        net.accuracy(x[:0, ...], backend.asarray(labels[:0]))


def test_accuracy_unchecked_counts_out_of_range_as_misses(backend: xprop.Backend) -> None:
    net, x, labels = _net_and_batch(backend, check_labels=False)
    seven = labels.copy()
    seven[-1] = 7  # a right answer turned into an impossible label
    assert net.accuracy(x, backend.asarray(seven)) == pytest.approx(5 / 8)


@pytest.mark.parametrize(
    ("batch_size", "error"),
    [(0, ValueError), (-5, ValueError), (2.5, TypeError), (True, TypeError)],
)
def test_accuracy_batch_size(backend: xprop.Backend, batch_size: object, error: type) -> None:
    net, x, labels = _net_and_batch(backend)
    with pytest.raises(error, match="batch_size must be an integer"):
        net.accuracy(x, backend.asarray(labels), batch_size=batch_size)  # type: ignore[arg-type]
    assert net.accuracy(x, backend.asarray(labels), batch_size=np.int64(5)) == pytest.approx(0.75)


# --------------------------------------------------------------------------------------
# check_labels=True under jax.jit: the error says what to do
# --------------------------------------------------------------------------------------


def test_label_check_under_jit_names_the_fix() -> None:
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    be = xprop.get_backend("jax", dtype="float32")
    net = TwoLayerNet(*SIZES, backend=be, seed=0)
    x = be.asarray(np.random.default_rng(0).random((4, SIZES[0])))
    t = be.asarray(np.array([0, 1, 2, 1]))
    probs = be.asarray(np.full((4, 3), 1 / 3))
    calls = {
        "loss": lambda x, t: net.loss(x, t),
        "one_hot": lambda x, t: F.one_hot(t, 3),
        "cross_entropy_error": lambda x, t: F.cross_entropy_error(probs, t),
        "accuracy-free loss layer": lambda x, t: SoftmaxWithLoss().forward(x[:, :3], t),
    }
    for name, fn in calls.items():
        with pytest.raises(TypeError, match=r"pass check_labels=False.*validate_labels") as info:
            jax.jit(fn)(x, t)
        assert info.value.__cause__ is not None, name
    # The documented way: labels checked once, then no device read inside the trace.
    F.validate_labels(t, 3)
    unchecked = TwoLayerNet(*SIZES, backend=be, seed=0, check_labels=False)
    assert float(jax.jit(unchecked.loss)(x, t)) == pytest.approx(float(net.loss(x, t)), rel=1e-6)
