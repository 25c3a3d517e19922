"""The examples, run as a user would (a subprocess), printing the book's numbers.

Examples without ``--backend`` here run on the backend the session selects
(``$XPROP_BACKEND``); the MNIST ones need ``XPROP_DATA_DIR`` and skip without it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``examples/<name>`` with this interpreter and environment; never raises on rc."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


def ok(result: subprocess.CompletedProcess) -> list[str]:
    """The stdout lines of a run that must have succeeded (shows stderr if it did not)."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


@pytest.fixture(scope="module")
def data_dir() -> str:
    folder = os.environ.get("XPROP_DATA_DIR")
    if not folder:
        pytest.skip("set XPROP_DATA_DIR to a folder with the four MNIST .gz files to run this")
    return folder


# --------------------------------------------------------------------------------------
# Computational graphs of ch. 5.4 and the worked 2-2-2 example
# --------------------------------------------------------------------------------------


def test_buy_apple():
    assert ok(run_example("buy_apple.py")) == ["220", "2.2 110 200"]


def test_buy_apple_orange():
    assert ok(run_example("buy_apple_orange.py")) == ["715", "110 2.2 3.3 165 650"]


def test_two_by_two_sigmoid():
    out = "\n".join(ok(run_example("two_by_two_sigmoid.py")))
    final = re.search(r"^ 1500\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.MULTILINE)
    assert final is not None, out
    o1, o2, loss = (float(v) for v in final.groups())
    assert 1.5e-7 < loss < 2.5e-7
    assert abs(o1 - 0.2) < 1e-3
    assert abs(o2 - 0.1) < 1e-3
    # hand-derived chain rule == layers, checker passes it and catches the broken one
    assert float(re.search(r"largest difference: (\S+)", out).group(1)) < 1e-12
    assert "hand-derived formula: passed" in out
    assert "caught" in out
    assert "2 of 8 elements differ" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backends", "numpy,nope"), "unknown backend(s) nope"),
        (("--backends", ","), "unknown backend(s) (none given)"),
        (("--tol", "nan"), "--tol: must be a finite number > 0, got 'nan'"),
        (("--tol", "0"), "--tol: must be a finite number > 0"),
        (("--tol=-1e-12",), "--tol: must be a finite number > 0"),
        (("--seed", "-1"), "--seed: must be an integer >= 0"),
    ],
)
def test_backend_agreement_rejects_bad_flags(args, message):
    result = run_example("backend_agreement.py", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "ok:" not in result.stdout


def test_backend_agreement_fails_when_a_named_backend_cannot_run():
    import xprop

    if "cupy" in xprop.available_backends():
        pytest.skip("cupy runs here: this test needs a backend that cannot run")
    result = run_example("backend_agreement.py", "--backends", "numpy,cupy")
    assert result.returncode == 1
    assert "unavailable" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAIL")


@pytest.mark.parametrize(
    ("example", "args", "message"),
    [
        ("two_by_two_sigmoid.py", ("--backend", "nope"), "error: unknown backend 'nope'"),
        ("gradient_check.py", ("--backend", "nope"), "error: unknown backend 'nope'"),
        ("gradient_check.py", ("--hidden", "0"), "--hidden: must be an integer >= 1, got '0'"),
        ("gradient_check.py", ("--hidden", "x"), "--hidden: invalid integer value: 'x'"),
        ("gradient_check.py", ("--seed", "-1"), "--seed: must be an integer >= 0"),
    ],
)
def test_examples_report_bad_flags_without_a_traceback(example, args, message):
    result = run_example(example, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_gradient_check_reports_a_data_dir_that_is_a_file(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = run_example("gradient_check.py", "--data-dir", str(not_a_folder))
    assert result.returncode == 2
    assert "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------
# MNIST examples
# --------------------------------------------------------------------------------------


def test_gradient_check(data_dir):
    # 3 hidden units instead of 50: the same check with 2352 instead of 39200 weights in W1.
    out = ok(run_example("gradient_check.py", "--hidden", "3"))
    diffs = dict(line.split(":") for line in out)
    assert list(diffs) == ["W1", "b1", "W2", "b2"]
    for key, value in diffs.items():
        assert float(value) < 1e-8, f"{key}: backprop and numerical gradients differ by {value}"


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_train_mnist_short_run(data_dir, backend, tmp_path):
    pytest.importorskip(backend, reason=f"backend {backend} is not installed")
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    record_path, plot_path = tmp_path / "run.json", tmp_path / "acc.png"
    out = ok(
        run_example(
            "train_mnist.py",
            *("--backend", backend, "--iters", "300", "--seed", "3"),
            *("--json", str(record_path), "--plot", str(plot_path)),
        )
    )
    # Not a terminal: a header, one row per evaluation, the final row, the summary.
    assert out[0].split() == ["epoch", "train_acc", "test_acc"]
    assert out[1].split()[0] == "0"
    assert out[2].split()[0] == "end"
    assert re.fullmatch(
        rf"backend={backend} device=\S.* dtype=float32 test_acc=0\.\d{{4}} wall=\S+s "
        r"ms_per_iter=\S+",
        out[-1],
    ), out[-1]

    record = json.loads(record_path.read_text())
    assert record["backend"] == backend
    assert record["iters"] == 300
    assert record["seed"] == 3
    assert record["iter_per_epoch"] == 600
    assert record["eval_iters"] == [0]  # 300 iterations: only the book's first evaluation
    assert len(record["train_acc_list"]) == len(record["test_acc_list"]) == 1
    assert len(record["train_loss_list"]) == 300
    assert record["train_loss_list"][-1] < record["train_loss_list"][0]
    assert 0.8 < record["test_acc"] <= 1.0  # measured after the last iteration
    assert f"test_acc={record['test_acc']:.4f}" in out[-1]
    assert record["ms_per_iter"] > 0
    assert plot_path.read_bytes()[:8] == PNG_MAGIC


def test_train_mnist_stops_when_the_loss_diverges(data_dir):
    result = run_example("train_mnist.py", "--backend", "numpy", "--iters", "20", "--lr", "1e30")
    assert result.returncode == 1
    assert "diverged" in result.stderr
    assert "lower --lr" in result.stderr


def test_train_mnist_checks_outputs_before_training(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "acc.png"
    result = run_example("train_mnist.py", "--plot", str(missing))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "epoch" not in result.stdout  # refused before any training


def test_train_mnist_without_matplotlib_refuses_plot(tmp_path):
    # Hide matplotlib from the example (a None entry makes `import matplotlib` fail).
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.argv = ['train_mnist.py', '--plot', {str(tmp_path / 'a.png')!r}]; "
        f"runpy.run_path({str(EXAMPLES / 'train_mnist.py')!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2
    assert "needs matplotlib" in result.stderr
    assert "epoch" not in result.stdout


@pytest.mark.slow
def test_train_mnist_book_protocol_reaches_the_book_accuracy(data_dir, tmp_path):
    selected = os.environ.get("XPROP_BACKEND", "numpy")
    if selected != "numpy":
        pytest.skip(
            f"the book-protocol run is a numpy test; it runs in the numpy session, not {selected}"
        )
    record_path = tmp_path / "run.json"
    ok(
        run_example(
            "train_mnist.py", "--backend", "numpy", "--json", str(record_path), timeout=1800
        )
    )
    record = json.loads(record_path.read_text())
    assert record["iters"] == 10000
    assert len(record["test_acc_list"]) == 17  # evaluations at i = 0, 600, ..., 9600
    assert record["test_acc"] >= 0.965
