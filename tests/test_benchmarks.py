"""The benchmark's own logic: its correctness gate and its target verdicts (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_train", reason="benchmarks/bench_train.py not importable")
from reference_nets import HandOptimised, HostData, Xprop  # noqa: E402


def _small_data() -> HostData:
    rng = np.random.default_rng(0)
    x = rng.random((300, 784), dtype=np.float32)
    t = rng.integers(0, 10, 300)
    # the book configuration's batch of 100 rows
    return HostData(x, t, x[:50], t[:50], "random", x_batch=x[:100], t_batch=t[:100])


class _WrongStep(HandOptimised):
    """Hand-optimised NumPy with its first-layer update doubled: a row computing other maths."""

    def __init__(self, dtype: str) -> None:
        super().__init__(dtype)
        self.key = "wrong"

    def step(self) -> None:
        super().step()
        self.W1 -= self.gW1


def test_check_keeps_correct_rows_and_drops_a_wrong_one() -> None:
    cfg = bench.CONFIGS["book"]
    data = _small_data()
    init = bench.initial_params(cfg, 0)
    rows = [
        HandOptimised("float32"),
        Xprop("numpy", "float32", how="step"),
        _WrongStep("float32"),
    ]
    for r in rows:
        r.prepare(cfg, data, init, 0)
    kept, report = bench.checked(rows, data, init)
    assert [r.key for r in kept] == ["hand", "xprop-numpy-step"]
    assert report["hand"]["update"] < 1e-5
    assert report["xprop-numpy-step"]["grad"] < 1e-5
    # W1 moved twice as far: the error is W1's whole update, measured (as every error there)
    # against the largest reference update of any parameter
    ref = bench.BookStyle("float64").gradient_of(
        {k: np.asarray(v, dtype=np.float64) for k, v in init.items()},
        data.x_batch,
        data.t_batch,
    )
    largest = max(float(np.max(np.abs(g))) for g in ref.values())
    want = float(np.max(np.abs(ref["W1"]))) / largest
    assert report["wrong"]["update"] == pytest.approx(want, rel=1e-4)
    assert report["wrong"]["update"] > 1e-2  # above the threshold that drops a row


def _row(config: str, mode: str, key: str, median: float, kind: str = "cpu") -> dict:
    return {
        "config": config,
        "mode": mode,
        "key": key,
        "label": key,
        "median_s": median,
        "device_kind": kind,
    }


def test_target_lines_verdicts_and_reach() -> None:
    rows = [
        _row("book", "step", "book", 1.0),
        _row("book", "step", "hand", 0.6),
        _row("book", "step", "floor", 0.5),
        _row("book", "step", "torch-eager", 1.2),
        _row("book", "step", "xprop-numpy-step", 0.66),
        _row("book", "loop", "book", 1.0),
        _row("book", "loop", "hand", 0.5),
        _row("book", "loop", "xprop-numpy-step", 0.51),
    ]
    lines = bench.target_lines(rows)
    text = "\n".join(lines)
    want = [
        "| book / step | xprop-numpy-step vs book | ≤ 0.55 | 0.66 | missed "
        "| hand 0.60, floor 0.50 |",
        "| book / step | xprop-numpy-step vs hand | ≤ 1.15 | 1.10 | met | floor 0.83 |",
        "| book / loop | xprop-numpy-step vs book | ≤ 0.55 | 0.51 | met | hand 0.50 |",
        "| book / step | xprop-numpy-step vs torch-eager | ≤ 1.00 | 0.55 | met |",
    ]
    for line in want:
        assert line in text
    # no protocol rows, no GPU rows: no verdict invented for them
    assert "protocol" not in text
    assert "gpu4096" not in text


def test_gpu_targets_on_cpu_rows_are_informative_and_gpu_rows_get_verdicts() -> None:
    rows = [
        _row("book", "step", "jax-jit", 0.5),
        _row("book", "step", "xprop-jax-compiled", 0.55),
        _row("book", "protocol-train", "torch-eager", 10.0, "gpu"),
        _row("book", "protocol-train", "xprop-jax-compiled", 1.2, "gpu"),
        _row("book", "protocol-train", "xprop-cupy-compiled", 2.0, "gpu"),
    ]
    text = "\n".join(bench.target_lines(rows))
    assert (
        "| book / step | xprop-jax-compiled vs jax-jit | ≤ 1.20 | 1.10 "
        "| (cpu: informative, the target is for gpu) |"
    ) in text
    assert "| xprop-jax-compiled vs torch-eager | ≤ 0.15 | 0.12 | met |" in text
    assert "| xprop-cupy-compiled vs torch-eager | ≤ 0.15 | 0.20 | missed |" in text


@pytest.mark.parametrize("how", ["book", "step", "compiled"])
def test_every_xprop_row_passes_the_check_on_jax(how: str) -> None:
    pytest.importorskip("jax", reason="JAX is not installed")
    cfg = bench.CONFIGS["book"]
    data = _small_data()
    init = bench.initial_params(cfg, 0)
    row = Xprop("jax", "float32", how=how)
    row.prepare(cfg, data, init, 0)
    kept, report = bench.checked([row], data, init)
    assert kept == [row]
    assert max(report[row.key].values()) < 1e-4
    if how == "compiled":
        assert row.label.endswith("compiled step (jax.jit)")
        accs, eval_s = row.protocol(5, 2)  # an epoch per step.run, evaluations timed apart
        assert 0.0 <= accs[1] <= 1.0
        assert eval_s > 0


def test_conv_bench_check_keeps_correct_rows_and_drops_a_wrong_one() -> None:
    bench_conv = pytest.importorskip("bench_conv", reason="benchmarks/bench_conv.py")

    class WrongGradient(bench_conv.BookRow):
        """The book's code with conv1's filter gradient doubled: a row computing other maths."""

        def gradient(self):
            grads = super().gradient()
            grads["W1"] = 2 * grads["W1"]
            return grads

    rows = bench_conv.make_rows("simple", ["book", "xprop-numpy"], 0, 1, [])
    book = rows[0]
    wrong = WrongGradient("simple", {k: v for k, v in book.net.params.items()}, book.x, book.t,
                          "float32")  # fmt: skip
    wrong.key = "wrong"
    kept, errors = bench_conv.check([*rows, wrong], "simple", 0)
    assert [r.key for r in kept] == ["book", "xprop-numpy"]
    # float32 against the book's code in float64, from the same weights and batch
    assert errors["book"] < 1e-5
    assert errors["xprop-numpy"] < 1e-5
    # the wrong row is off by W1's whole gradient, relative to the largest gradient
    want = book.gradient()
    largest = max(float(np.max(np.abs(g))) for g in want.values())
    assert errors["wrong"] == pytest.approx(float(np.max(np.abs(want["W1"]))) / largest, rel=1e-3)
