"""Compiled training steps: the same numbers as the eager step, on every backend.

Where a library compiles (JAX here; PyTorch on CUDA where there is one), the compiled step
must give the parameters the eager step gives; where it does not, ``compile_step`` is the
eager step.  Also: traces leave nothing behind, minibatch schedules are backend-independent,
and ``auto`` picks the fastest backend it measured.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xprop
from xprop import TwoLayerNet, _constants
from xprop.auto import choose_backend
from xprop.training.compiled import replica

SIZES = (20, 16, 5)
BATCH = 8
STEPS = 50
LR = 0.3


def _data(be: xprop.Backend, n: int = 64, seed: int = 3) -> tuple:
    rng = np.random.default_rng(seed)
    return be.asarray(rng.random((n, SIZES[0]))), be.asarray(rng.integers(0, SIZES[2], n))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _params(be: xprop.Backend, net: TwoLayerNet) -> dict[str, np.ndarray]:
    return {k: be.to_numpy(v).astype(np.float64) for k, v in net.params.items()}


def test_compiled_step_equals_eager_after_50_steps_float64(backend: xprop.Backend) -> None:
    _compare_compiled_with_eager(backend)


def test_compiled_step_equals_eager_after_50_steps_float32(backend32: xprop.Backend) -> None:
    _compare_compiled_with_eager(backend32)


def _compare_compiled_with_eager(be: xprop.Backend) -> None:
    tol = 1e-12 if be.dtype_name == "float64" else 1e-5
    x, t = _data(be)
    eager = TwoLayerNet(*SIZES, "he", backend=be, seed=0)
    compiled = TwoLayerNet(*SIZES, "he", backend=be, seed=0)
    step = compiled.compile_step(LR)
    idx = be.rng(1).choice(64, (STEPS, BATCH))
    xp = be.xp
    eager_losses, compiled_losses = [], []
    for i in range(STEPS):
        xb, tb = xp.take(x, idx[i, ...], axis=0), xp.take(t, idx[i, ...], axis=0)
        xprop.SGD(LR).update(eager.params, eager.gradient(xb, tb))  # the book's loop body
        eager_losses.append(float(be.to_numpy(eager.last_loss)))
        compiled_losses.append(float(be.to_numpy(step(xb, tb))))
    want, got = _params(be, eager), _params(be, compiled)
    for key in want:
        assert _rel(got[key], want[key]) <= tol, f"{step.kind} {key}"
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=tol)
    # Training happened: the loss fell, and the weights moved from their start.
    assert eager_losses[-1] < 0.8 * eager_losses[0]
    start = _params(be, TwoLayerNet(*SIZES, "he", backend=be, seed=0))
    assert _rel(got["W1"], start["W1"]) > 1e-3


def test_run_equals_step_by_step(backend: xprop.Backend) -> None:
    """``step.run`` over an epoch of index rows: the same losses and weights as one by one."""
    x, t = _data(backend)
    xp = backend.xp
    idx = backend.rng(2).choice(64, (12, BATCH))
    by_run = TwoLayerNet(*SIZES, "he", backend=backend, seed=0)
    losses = by_run.compile_step(LR).run(x, t, idx)
    by_step = TwoLayerNet(*SIZES, "he", backend=backend, seed=0)
    step = by_step.compile_step(LR)
    one_by_one = [
        step(xp.take(x, idx[i, ...], axis=0), xp.take(t, idx[i, ...], axis=0)) for i in range(12)
    ]
    assert tuple(losses.shape) == (12,)
    np.testing.assert_allclose(
        backend.to_numpy(losses), [float(backend.to_numpy(v)) for v in one_by_one], rtol=1e-12
    )
    want, got = _params(backend, by_step), _params(backend, by_run)
    for key in want:
        assert _rel(got[key], want[key]) <= 1e-12, key


def test_compile_step_kind_per_library(backend: xprop.Backend) -> None:
    step = TwoLayerNet(*SIZES, backend=backend, seed=0).compile_step(0.1)
    expected = {"jax": "jax.jit"}.get(backend.name, "eager")
    if backend.name == "torch" and backend.device.type == "cuda":
        expected = "torch CUDA graph"
    assert step.kind == expected


@pytest.mark.parametrize(
    ("lr", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (0.0, ValueError),
        (-0.1, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_compile_step_rejects_bad_learning_rates(lr: object, error: type) -> None:
    net = TwoLayerNet(*SIZES, seed=0)
    with pytest.raises(error, match="learning rate"):
        net.compile_step(lr)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# JAX: traces leave nothing behind
# --------------------------------------------------------------------------------------


@pytest.fixture
def jax_backend() -> xprop.Backend:
    pytest.importorskip("jax", reason="JAX is not installed")
    return xprop.get_backend("jax", dtype="float32")


def _is_tracer(value: object) -> bool:
    import jax

    return isinstance(value, jax.core.Tracer)


def test_two_network_shapes_traced_in_one_process(jax_backend: xprop.Backend) -> None:
    """The failure the ones cache used to cause: a second shape traced after the first."""
    import jax

    be = jax_backend
    rng = np.random.default_rng(0)
    for sizes, n in (((6, 5, 3), 4), ((9, 7, 4), 6), ((6, 5, 3), 5)):
        net = TwoLayerNet(*sizes, backend=be, seed=1, check_labels=False)
        x = be.asarray(rng.random((n, sizes[0])))
        t = be.asarray(rng.integers(0, sizes[2], n))
        eager = TwoLayerNet(*sizes, backend=be, seed=1, check_labels=False)
        want = eager.loss(x, t)
        # jit of the user's own function around the network (no compile_step involved)
        got = jax.jit(lambda x, t, net=net: replica(net).loss(x, t))(x, t)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
        net.compile_step(0.1)(x, t)
    assert not any(_is_tracer(v) for v in _constants._CACHE.values())


def test_jitted_predict_then_eager_gradient(jax_backend: xprop.Backend) -> None:
    import jax

    be = jax_backend
    x, t = _data(be, n=6)
    net = TwoLayerNet(*SIZES, backend=be, seed=4)
    ref = TwoLayerNet(*SIZES, backend=be, seed=4)
    scores = jax.jit(net.predict)(x)
    np.testing.assert_allclose(be.to_numpy(scores), be.to_numpy(ref.predict(x)), rtol=1e-6)
    grads, want = net.gradient(x, t), ref.gradient(x, t)
    for key in want:
        assert not _is_tracer(grads[key])
        np.testing.assert_allclose(be.to_numpy(grads[key]), be.to_numpy(want[key]), rtol=1e-6)


def test_compiled_step_keeps_no_tracer_and_donates(jax_backend: xprop.Backend) -> None:
    be = jax_backend
    x, t = _data(be, n=BATCH)
    net = TwoLayerNet(*SIZES, backend=be, seed=0, check_labels=False)
    before = net.params["W1"]
    step = net.compile_step(0.1)
    loss = step(x, t)
    step(x, t)
    assert not _is_tracer(loss)
    assert all(not _is_tracer(v) for v in net.params.values())
    # The network's own layers were never used by the compiled step.
    assert net.layers["Affine1"].x is None
    assert net.last_layer.loss is None
    # Donated: the old buffer is gone, and params holds the new arrays.
    assert before.is_deleted()
    assert not net.params["W1"].is_deleted()


def test_jax_synchronize_blocks_on_the_arrays(
    jax_backend: xprop.Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jax

    seen = []
    monkeypatch.setattr(jax, "block_until_ready", lambda arrays: seen.append(arrays))
    a, b = jax_backend.zeros(3), jax_backend.zeros(2)
    jax_backend.synchronize(a, b)
    assert len(seen) == 1
    assert seen[0][0] is a
    assert seen[0][1] is b


# --------------------------------------------------------------------------------------
# Minibatch indices and auto
# --------------------------------------------------------------------------------------


def test_epoch_of_indices_is_the_same_on_every_backend(backend: xprop.Backend) -> None:
    """One draw of (k, B) = k draws of B in a row = NumPy's generator, on any backend."""
    epoch = backend.to_numpy(backend.rng(7).choice(1000, (30, 20)))
    rng = backend.rng(7)
    steps = np.stack([backend.to_numpy(rng.choice(1000, 20)) for _ in range(30)])
    reference = np.random.default_rng(7).integers(0, 1000, (30, 20))
    np.testing.assert_array_equal(epoch, reference)
    np.testing.assert_array_equal(steps, reference)


def test_auto_picks_the_fastest_it_measured() -> None:
    names = [n for n in ("numpy", "torch", "jax") if n in xprop.available_backends()]
    choice = choose_backend(30, 20, 5, 16, names=[*names, "nope"], steps=3, repeats=3)
    timed = choice.seconds_per_step
    assert len(timed) >= len(names)  # one device each here (CPU), more on a GPU machine
    assert choice.backend.describe() == min(timed, key=lambda k: timed[k])
    assert all(t > 0 for t in timed.values())
    assert "nope" in choice.skipped
    assert "unknown backend" in choice.skipped["nope"]
    report = choice.report()
    assert "30-20-5, batch 16, float32" in report
    for label in timed:
        assert label in report
    assert report.count("<- chosen") == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "choose_backend steps must be an integer of at least 1, got 0"),
        ({"repeats": 0}, ValueError, "repeats must be an integer of at least 1, got 0"),
        ({"steps": 2.5}, TypeError, "choose_backend steps must be an integer, got float 2.5"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer of at least 1, got 0"),
        ({"hidden_size": -3}, ValueError, "hidden_size must be an integer of at least 1"),
    ],
)
def test_auto_checks_its_arguments_first(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        choose_backend(names=["numpy"], **kwargs)
    one = choose_backend(8, 4, 3, 2, names=["numpy"], steps=1, repeats=1)
    assert len(one.seconds_per_step) == 1  # the smallest counts are fine


def test_get_backend_auto_returns_a_measured_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from xprop import auto

    monkeypatch.setattr(auto, "_AUTO_CACHE", {})
    monkeypatch.setenv("XPROP_BACKEND", "auto")
    be = xprop.get_backend()
    choice = auto.last_choice("float32")
    assert choice is not None
    assert be is choice.backend
    assert be.name in xprop.available_backends()
    assert be.name != "array_api_strict"
    assert xprop.get_backend("auto") is be  # measured once per process


@pytest.mark.skipif(
    not (
        __import__("importlib").util.find_spec("torch") is not None
        and __import__("torch").cuda.is_available()
    ),
    reason="no CUDA device for torch: the CUDA-graph step needs one",
)
def test_cuda_graph_step_equals_eager() -> None:
    for dtype, tol in (("float64", 1e-12), ("float32", 1e-5)):
        be = xprop.get_backend("torch", device="cuda", dtype=dtype)
        x, t = _data(be)
        eager = TwoLayerNet(*SIZES, "he", backend=be, seed=0, check_labels=False)
        graphed = TwoLayerNet(*SIZES, "he", backend=be, seed=0, check_labels=False)
        step = graphed.compile_step(LR)
        assert step.kind == "torch CUDA graph"
        idx = be.rng(1).choice(64, (STEPS, BATCH))
        losses = step.run(x, t, idx)
        want = xprop.training.step.EagerStep(eager, xprop.SGD(LR)).run(x, t, idx)
        np.testing.assert_allclose(be.to_numpy(losses), be.to_numpy(want), rtol=tol)
        for key in eager.params:
            got, ref = be.to_numpy(graphed.params[key]), be.to_numpy(eager.params[key])
            assert _rel(got, ref) <= tol, key
