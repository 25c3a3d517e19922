"""The examples, run as a user would (a subprocess), printing the book's numbers.

Each example runs once per test run, with the short settings of ``examples/_settings.py``
(the table the documentation's gallery reads too): in the session of
``backend_list.EXAMPLES_SESSION`` (array_api_strict, the standard's reference, so the
examples' own array code is checked to be standard), or in every run without
``$XPROP_BACKEND``.  A test about one backend (its parameter ``name``) runs in that backend's
session.  Examples without ``--backend`` run on the session's backend; the MNIST ones need
``XPROP_DATA_DIR`` and skip without it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import backend_list
import numpy as np
import pytest

import xprop

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load_example(name: str):
    """``examples/<name>`` imported (its helpers, such as ``_common``, found beside it)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


SETTINGS = _load_example("_settings.py").SETTINGS


def short(name: str) -> tuple[str, ...]:
    """The short run of ``examples/<name>`` (the table's): the tests add only their outputs."""
    return SETTINGS[name].short


def session_backend() -> str:
    """The backend the examples run on here: the session's, else numpy (their default)."""
    return os.environ.get("XPROP_BACKEND", "").strip() or "numpy"


@pytest.fixture(autouse=True)
def _once_per_test_run(request: pytest.FixtureRequest) -> None:
    """Skip outside the one session that runs this test (see the module's docstring)."""
    callspec = getattr(request.node, "callspec", None)
    session = (callspec.params if callspec else {}).get("name", backend_list.EXAMPLES_SESSION)
    selected = os.environ.get("XPROP_BACKEND", "").strip()
    if selected and selected != session:
        pytest.skip(f"runs once per test run, in the {session} session, not {selected}")


def run_example(
    name: str, *args: str, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``examples/<name>`` with this interpreter and environment (in the folder ``cwd``,
    default this one); never raises on rc."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        cwd=cwd,
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


@pytest.mark.parametrize(
    ("example", "printed"),
    [
        ("buy_apple.py", ["220", "2.2 110 200"]),
        ("buy_apple_orange.py", ["715", "110 2.2 3.3 165 650"]),
    ],
)
def test_buy_apple_computes_and_draws_its_graph(example, printed, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    plot = tmp_path / "graph.png"
    # the book's numbers, then where the figure went
    assert ok(run_example(example, "--plot", str(plot))) == [*printed, f"plot: {plot}"]
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["graph.png"]  # no temporary file left


@pytest.mark.parametrize(
    ("plot", "message"),
    [("missing/graph.png", "folder"), ("graph.jpg", "end the name in .png")],
)
def test_buy_apple_refuses_a_plot_it_cannot_write(plot, message, tmp_path):
    result = run_example("buy_apple.py", "--plot", str(tmp_path / plot))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""  # refused before computing anything


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
    out = ok(run_example("gradient_check.py", *short("gradient_check.py")))
    diffs = dict(line.split(":") for line in out)
    assert list(diffs) == ["W1", "b1", "W2", "b2"]
    for key, value in diffs.items():
        assert float(value) < 1e-8, f"{key}: backprop and numerical gradients differ by {value}"


def compiled_path(name: str) -> str:
    """The path train_mnist.py reports on backend ``name`` here: the kind of its step.

    ``net.compile_step`` chooses by library and device (``jax.jit`` for JAX, a CUDA graph
    for PyTorch on a GPU, the eager step elsewhere), so the tests ask it rather than assume
    the CPU's answer.  The example picks its device as this does (``$XPROP_DEVICE``).
    """
    import xprop

    backend = xprop.get_backend(name, dtype="float32")
    return xprop.TwoLayerNet(3, 2, 2, backend=backend, seed=0).compile_step(0.1).kind


@pytest.mark.parametrize("name", backend_list.CPU)
def test_train_mnist_reports_the_path_its_backend_compiles(name, monkeypatch, capsys, tmp_path):
    """No MNIST needed: a few steps on random images stand in for it."""
    pytest.importorskip(name, reason=f"backend {name} is not installed")
    import xprop

    example = _load_example("train_mnist.py")
    n_train, n_test = 200, 50
    rng = np.random.default_rng(0)

    def fake_mnist(*, normalize, one_hot_label, data_dir, backend):
        assert normalize
        assert one_hot_label
        eye = np.eye(10)
        train = rng.random((n_train, 784)), eye[rng.integers(0, 10, n_train)]
        test = rng.random((n_test, 784)), eye[rng.integers(0, 10, n_test)]
        return tuple((backend.asarray(x), backend.asarray(t)) for x, t in (train, test))

    monkeypatch.setattr(example, "load_mnist", fake_mnist)
    monkeypatch.setattr(example, "TRAIN_SIZE", n_train)  # minibatch indices below 200
    flags = ["--backend", name, "--iters", "3", "--hidden", "4", "--batch-size", "20"]
    assert example.main([*flags, "--json", str(tmp_path / "run.json")]) == 0
    want = compiled_path(name)
    assert json.loads((tmp_path / "run.json").read_text())["path"] == want
    assert f" path={want} test_acc=" in capsys.readouterr().out.splitlines()[-1]
    if not xprop.get_backend(name).is_accelerator:
        # On the CPU only JAX compiles the step; PyTorch's CUDA graph needs a GPU.
        assert want == ("jax.jit" if name == "jax" else "eager")


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_train_mnist_short_run(data_dir, name, tmp_path):
    backend = name
    pytest.importorskip(backend, reason=f"backend {backend} is not installed")
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    path = compiled_path(backend)  # eager on the CPU; a CUDA graph for torch on a GPU
    record_path, plot_path = tmp_path / "run.json", tmp_path / "acc.png"
    out = ok(
        run_example(
            "train_mnist.py",
            *("--backend", backend, *short("train_mnist.py"), "--seed", "3"),
            *("--json", str(record_path), "--plot", str(plot_path)),
        )
    )
    assert out[-1] == f"plot: {plot_path}"  # where the figure went, last
    out.pop()
    # Not a terminal: a header, one row per evaluation, the final row, the summary.
    assert out[0].split() == ["epoch", "train_acc", "test_acc"]
    assert out[1].split()[0] == "0"
    assert out[2].split()[0] == "end"
    assert re.fullmatch(
        rf"backend={backend} device=\S.* dtype=float32 path={re.escape(path)} "
        r"test_acc=0\.\d{4} "
        r"wall=\S+s ms_per_iter=\S+",
        out[-1],
    ), out[-1]

    record = json.loads(record_path.read_text())
    assert record["backend"] == backend
    assert record["path"] == path
    assert record["iters"] == 300 == int(short("train_mnist.py")[1])
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
    # Trainer's message: the step whose loss stopped being finite, and the fix.
    assert "the training loss became nan at step 1" in result.stderr
    assert "training diverged: lower the learning rate" in result.stderr


def test_train_mnist_stops_when_training_diverges_to_a_finite_loss(data_dir, tmp_path):
    """lr=100 blows the loss up to ~1e6, then it settles near 40: finite, and useless."""
    record_path = tmp_path / "run.json"
    result = run_example(
        "train_mnist.py",
        *("--backend", "numpy", "--iters", "700", "--lr", "100", "--hidden", "10"),
        *("--json", str(record_path)),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "training diverged: the mean loss" in result.stderr
    assert "lower --lr" in result.stderr
    assert not record_path.exists()  # no record of a run that did not finish


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "inf"], "--lr must be a finite positive number"),
        (["--lr", "nan"], "--lr must be a finite positive number"),
        (["--lr", "0"], "--lr must be a finite positive number"),
        (["--batch-size", "60001"], "larger than the 60000 training images"),
        (["--iters", "0"], "--iters must be at least 1"),
    ],
)
def test_train_mnist_rejects_bad_numbers(flags, message):
    result = run_example("train_mnist.py", *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_train_mnist_checks_outputs_before_training(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "acc.png"
    cases = [
        (["--plot", str(missing)], "does not exist"),
        (["--json", str(tmp_path)], "it is a folder"),
        (["--plot", str(tmp_path / "a.txt")], "'.txt' is not an image format"),
        (["--plot", str(tmp_path / "acc")], "the name has no suffix"),
        (["--json", "/proc/run.json"], "cannot write --json /proc/run.json"),
    ]
    for flags, message in cases:
        result = run_example("train_mnist.py", *flags)
        assert result.returncode == 2, flags
        assert message in result.stderr, (flags, result.stderr)
        assert "epoch" not in result.stdout  # refused before any training


def test_train_mnist_writes_the_json_even_when_the_plot_fails(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    example = _load_example("train_mnist.py")
    record = {
        "train_acc_list": [0.5],
        "test_acc_list": [0.5],
        "hidden": 3,
        "backend": "numpy",
        "dtype": "float32",
        "test_acc": 0.5,
    }
    args = example.parse_args(
        ["--json", str(tmp_path / "run.json"), "--plot", str(tmp_path / "gone" / "a.png")]
    )
    assert example.save_outputs(args, record) == 3
    assert json.loads((tmp_path / "run.json").read_text()) == record
    assert "could not write --plot" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left


def test_examples_write_atomically(tmp_path):
    example = _load_example("_common.py")  # every example writes its files through it
    target = tmp_path / "run.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        example.write_atomically(target, broken)
    assert target.read_text() == "old"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


@pytest.mark.parametrize("book_loop", [False, True], ids=["fast-path", "book-loop"])
def test_train_mnist_reads_nothing_from_the_device_per_step(data_dir, book_loop, monkeypatch):
    """Count every read of the device: it must not grow with the number of steps."""
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    from array_api_strict._array_object import Array

    from xprop.libraries.array_api_strict import ArrayApiStrictLibrary

    example = _load_example("train_mnist.py")
    reads: list[str] = []
    to_numpy = ArrayApiStrictLibrary.to_numpy
    monkeypatch.setattr(
        ArrayApiStrictLibrary,
        "to_numpy",
        lambda self, x: reads.append("to_numpy") or to_numpy(self, x),
    )
    for method in ("__float__", "__int__", "__bool__", "__index__"):
        original = getattr(Array, method)

        def counted(self, original=original, method=method):
            reads.append(method)
            return original(self)

        monkeypatch.setattr(Array, method, counted)

    def run(iters: int) -> list[str]:
        reads.clear()
        flags = ["--backend", "array_api_strict", "--iters", str(iters), "--hidden", "4"]
        example.train(example.parse_args(flags + (["--book-loop"] if book_loop else [])))
        return list(reads)

    short, long = run(20), run(60)  # the same evaluations (after step 0 and at the end)
    assert short == long, f"{len(long) - len(short)} more device reads for 40 more steps"
    assert 0 < len(short) < 60


def test_train_mnist_without_matplotlib_refuses_plot(tmp_path):
    # Hide matplotlib from the example (a None entry makes `import matplotlib` fail).
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; "
        f"sys.path.insert(0, {str(EXAMPLES)!r}); "  # as `python examples/train_mnist.py` does
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


def test_train_mnist_auto_trains_on_the_fastest_backend_it_timed(data_dir, tmp_path):
    record_path = tmp_path / "run.json"
    args = ("--backend", "auto", *short("train_mnist.py"), "--json", str(record_path))
    out = ok(run_example("train_mnist.py", *args))
    record = json.loads(record_path.read_text())
    report = record["auto"].splitlines()
    assert out[: len(report)] == report  # the timings first, then the table
    assert out[len(report)].split() == ["epoch", "train_acc", "test_acc"]
    assert report[0].startswith("auto: timed a training step of")
    timed = [line for line in report if "ms/step" in line]
    assert timed
    assert all(float(re.search(r"(\S+) ms/step", line).group(1)) > 0 for line in timed)
    # sorted by time: the chosen one, the fastest, first
    assert timed[0].endswith(" 1.00x)  <- chosen")
    assert record["backend"] in timed[0]
    assert 0.8 < record["test_acc"] <= 1.0


# --------------------------------------------------------------------------------------
# Chapter 6 examples (short settings; the session's backend)
# --------------------------------------------------------------------------------------


def test_optimizer_compare_mnist(data_dir, tmp_path):
    plot = tmp_path / "optimizers.png"
    out = ok(run_example("optimizer_compare_mnist.py", *short("optimizer_compare_mnist.py"),
                         "--plot", str(plot)))  # fmt: skip
    assert out[0] == "=========== iteration:0 ==========="
    summary = out[out.index("mean loss over the last 15 iterations:") + 1 :]
    names = [line.split()[0] for line in summary[:6]]
    assert names == ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
    losses = {line.split()[0]: float(line.split()[1]) for line in summary[:6]}
    assert all(0 < v < 2.5 for v in losses.values())
    assert losses["Adam"] < losses["SGD"]  # SGD at lr 0.01 barely moves in 30 steps
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert out[-1] == f"plot: {plot}"  # tmp_path is absolute: printed as given


def test_batch_norm_test(data_dir, tmp_path):
    plot = tmp_path / "bn.png"
    out = ok(run_example("batch_norm_test.py", *short("batch_norm_test.py"), "--plot", str(plot)))
    epochs = [line for line in out if line.startswith("epoch:")]
    assert len(epochs) == 4  # 2 scales x 2 epochs
    assert re.fullmatch(r"epoch:1 \| 0\.\d{4} - 0\.\d{4}", epochs[-1])
    assert out[0] == "============== 1/2: weight std 1 =============="
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert out[-1] == f"plot: {plot}"


def test_overfit_weight_decay_prints_the_full_path_of_a_relative_plot(data_dir, tmp_path):
    (tmp_path / "figs").mkdir()
    args = (*short("overfit_weight_decay.py"), "--plot", "figs/../figs/wd.png")
    out = ok(run_example("overfit_weight_decay.py", *args, cwd=tmp_path))
    assert [line.split(",")[0] for line in out[:3]] == ["epoch:0", "epoch:1", "epoch:2"]
    printed = Path(out[-1].removeprefix("plot: "))
    assert printed.is_absolute()
    assert ".." not in printed.parts  # normalised: the path a user can paste
    assert printed.resolve() == (tmp_path / "figs" / "wd.png").resolve()
    assert printed.read_bytes()[:8] == PNG_MAGIC


def test_overfit_dropout(data_dir, tmp_path):
    # No --plot: the default file, in the current folder, and its full path printed (the
    # folder's .gitignore may hide it; the user still learns where it went).
    out = ok(run_example("overfit_dropout.py", *short("overfit_dropout.py"), cwd=tmp_path))
    assert out[0].startswith("=== epoch:1, train loss:")
    assert out[3] == "=============== Final Test Accuracy ==============="
    assert re.fullmatch(r"test acc:0\.\d{4}", out[4])
    assert out[-1].startswith("plot: ")
    printed = Path(out[-1].removeprefix("plot: "))
    assert printed.is_absolute()
    assert printed.resolve() == (tmp_path / "overfit_dropout.png").resolve()
    assert printed.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["overfit_dropout.png"]


def other_light_backend() -> str:
    """Where train_save_reload.py reloads: numpy from array_api_strict, else array_api_strict
    (both always installed: the checkpoint crosses libraries)."""
    return "numpy" if session_backend() == "array_api_strict" else "array_api_strict"


def test_train_save_reload(data_dir, tmp_path):
    path = tmp_path / "net.safetensors"
    args = (*short("train_save_reload.py"), "--to", other_light_backend())
    out = ok(run_example("train_save_reload.py", *args, "--path", str(path)))
    assert "parameters identical: True" in out
    assert any(line.startswith(f"saved {path}: MultiLayerNetExtend") for line in out)
    assert not any("temporary" in line for line in out)  # kept where --path said
    accuracy = next(line for line in out if line.startswith("test accuracy:"))
    first, second = re.findall(r"0\.\d{4}", accuracy)
    assert first == second
    assert float(first) > 0.8
    assert path.stat().st_size > 0


def test_train_save_reload_says_its_checkpoint_is_temporary(data_dir, tmp_path):
    args = ("--epochs", "1", "--train-size", "500", "--to", other_light_backend())
    out = ok(run_example("train_save_reload.py", *args, cwd=tmp_path))
    saved = next(i for i, line in enumerate(out) if line.startswith("saved "))
    match = re.fullmatch(
        r"saved (\S+): MultiLayerNetExtend \[100, 100\] .* \((\d+) bytes\)", out[saved]
    )
    assert match is not None, out[saved]
    path = Path(match.group(1))
    assert path.is_absolute()
    assert path.name == "net.safetensors"
    assert int(match.group(2)) > 0
    assert out[saved + 1] == "  (a temporary file, removed once reloaded; --path FILE keeps it)"
    assert not path.exists()  # as it said
    assert not path.parent.exists()
    assert list(tmp_path.iterdir()) == []  # nothing left in the current folder
    assert "parameters identical: True" in out


def training_lines(out: list[str], first: int = 0) -> tuple[str, list[list[str]]]:
    """What every chapter 7-8 example prints of its training (``examples/_convnet.py``'s
    ``fit``), from line ``first``: the first line's network, steps and seed (its backend,
    path and the book's Adam lr 0.001 checked, not returned), and the table's rows, each
    ``[epoch, step]``."""
    what = re.fullmatch(
        r"(\w+) on .+, [^,:]+: (\d+ steps of 100 \([\d.]+ epochs? of \d+ images\)), "
        r"Adam lr 0\.001, (seed \d+)",
        out[first],
    )
    assert what is not None, out[first]
    assert out[first + 1].split() == [
        "epoch", "iter", "train_loss", "train_acc", "test_acc", "time_s"
    ]  # fmt: skip
    row = re.compile(r" *(\d+|end) +(\d+) +(\d\.\d{4}|) +[01]\.\d{4} +[01]\.\d{4} +\d+\.\d")
    rows = []
    for line in out[first + 2 :]:
        if (match := row.fullmatch(line)) is None:
            break
        rows.append([match.group(1), match.group(2)])
    assert rows[-1][0] == "end", rows  # the final evaluation, on all the test images
    return f"{what.group(1)}: {what.group(2)}, {what.group(3)}", rows


def test_train_convnet_short_run_saves_a_checkpoint_that_reloads(data_dir, tmp_path):
    record_path, ckpt = tmp_path / "run.json", tmp_path / "convnet.safetensors"
    args = (*short("train_convnet.py"), "--seed", "2")
    out = ok(
        run_example("train_convnet.py", *args, "--json", str(record_path), "--save", str(ckpt))
    )
    what, rows = training_lines(out)
    assert what == "SimpleConvNet: 30 steps of 100 (3 epochs of 1000 images), seed 2"
    # evaluations after steps 0, 10, 20 (one per epoch), then the final one after step 29
    assert rows == [["0", "0"], ["1", "10"], ["2", "20"], ["end", "29"]]
    record = json.loads(record_path.read_text())
    assert (record["network"], record["steps"], record["seed"]) == ("SimpleConvNet", 30, 2)
    assert (record["train_size"], record["test_size"]) == (1000, 1000)
    assert [row["iteration"] for row in record["evaluations"]] == [0, 10, 20, 29]
    assert len(record["test_acc_list"]) == 3  # the epochs' evaluations, not the final one
    losses = [row["train_loss"] for row in record["evaluations"]]
    assert losses[-1] < losses[0] - 0.5  # ln 10 = 2.30 at the start: it learns
    assert 0.5 < record["test_acc"] <= 1.0
    assert re.fullmatch(
        r"SimpleConvNet backend=\S+ dtype=float32 path=\S+ seed=2 epochs=3 "
        r"test_acc=0\.\d{4} \(1000 test images\) wall=\S+s",
        out[-1],
    ), out[-1]
    assert f"test_acc={record['test_acc']:.4f}" in out[-1]
    # the checkpoint holds the trained network: reloaded, it scores what the run reported
    backend = xprop.get_backend(record["backend"], dtype="float32")
    net = xprop.SimpleConvNet(backend=backend, seed=99)
    net.load_params(ckpt)
    (_, _), (x_test, t_test) = xprop.load_mnist(flatten=False, data_dir=data_dir, backend=backend)
    assert net.accuracy(x_test[:1000, ...], t_test[:1000, ...]) == record["test_acc"]


def test_train_deepnet_short_run(data_dir, tmp_path):
    record_path = tmp_path / "run.json"
    args = (*short("train_deepnet.py"), "--seed", "1")
    out = ok(run_example("train_deepnet.py", *args, "--json", str(record_path)))
    what, rows = training_lines(out)
    assert what == "DeepConvNet: 10 steps of 100 (2 epochs of 500 images), seed 1"
    assert rows == [["0", "0"], ["1", "5"], ["end", "9"]]
    record = json.loads(record_path.read_text())
    assert (record["network"], record["steps"], record["seed"]) == ("DeepConvNet", 10, 1)
    assert [row["iteration"] for row in record["evaluations"]] == [0, 5, 9]
    losses = [row["train_loss"] for row in record["evaluations"]]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]  # He's scales: the first loss is above ln 10, then falls
    assert 0.0 <= record["test_acc"] <= 1.0
    assert f"test_acc={record['test_acc']:.4f} (500 test images)" in out[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--epochs", "0"), "--epochs must be at least 1"),
        (("--test-size", "0"), "--test-size must be at least 1"),
        (("--save", "no/such/folder/net.safetensors"), "does not exist"),
    ],
)
@pytest.mark.parametrize("example", ["train_convnet.py", "train_deepnet.py"])
def test_convnet_examples_refuse_bad_flags_before_training(example, args, message):
    result = run_example(example, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "epoch" not in result.stdout


def test_ch6_examples_refuse_a_missing_plot_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "plot.png"
    result = run_example("overfit_dropout.py", "--plot", str(missing))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "epoch" not in result.stdout  # refused before any training


def test_smooth_curve_keeps_length_and_constants():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _common import smooth_curve
    finally:
        sys.path.remove(str(EXAMPLES))
    assert smooth_curve([1.0] * 50).tolist() == pytest.approx([1.0] * 50)
    steps = smooth_curve([0.0] * 20 + [1.0] * 20)
    assert len(steps) == 40
    assert 0 < steps[19] < steps[20] < 1  # the jump is smoothed
    assert np.all(np.diff(steps) >= 0)


@pytest.fixture
def xprop_gallery():
    """docs/_ext/xprop_gallery.py: how the docs build runs the examples."""
    pytest.importorskip("sphinx", reason="the gallery settings import sphinx (.[docs])")
    sys.path.insert(0, str(EXAMPLES.parent / "docs" / "_ext"))
    try:
        import xprop_gallery
    finally:
        sys.path.pop(0)
    return xprop_gallery


def test_every_example_has_its_settings():
    # The tests and the docs build run each example with its row of examples/_settings.py;
    # an example missing there would fail the docs build, one without a title too.
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    assert sorted(SETTINGS) == scripts
    for name in scripts:
        title, underline = (EXAMPLES / name).read_text().split("\n")[:2]
        assert title.startswith('"""'), name
        assert len(title) > 3, name
        assert underline == "=" * (len(title) - 3), f"{name}: the title needs a '=' underline"


def test_gallery_runs_examples_as_scripts(xprop_gallery):
    args = xprop_gallery.reset_argv({}, {"src_file": str(EXAMPLES / "batch_norm_test.py")})
    assert args[0] == "--plot"  # the book's settings up to chapter 6
    assert args[1].endswith("batch_norm_test.png")
    assert xprop_gallery.reset_argv({}, {"src_file": str(EXAMPLES / "gradient_check.py")}) == []
    # the convolutional networks' short runs, from the same table as the tests'
    args = xprop_gallery.reset_argv({}, {"src_file": str(EXAMPLES / "train_convnet.py")})
    assert args == ["--epochs", "3", "--train-size", "1000", "--test-size", "1000"]
    # sys.exit(main()), the examples' last line, in a gallery run: 0 returns, another
    # status fails the example
    real = sys.exit
    xprop_gallery.run_as_script({}, "x.py", "before")
    try:
        assert sys.exit(0) is None
        with pytest.raises(xprop_gallery.ExampleExit, match="exited with status 2"):
            sys.exit(2)
    finally:
        xprop_gallery.run_as_script({}, "x.py", "after")
    assert sys.exit is real


# --------------------------------------------------------------------------------------
# Chapters 7-8 examples (short settings; the session's backend)
# --------------------------------------------------------------------------------------

SHORT_CNN = short("visualize_filter.py")  # ~90 % test accuracy


def test_visualize_filter(data_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    plot = tmp_path / "filters.png"
    out = ok(run_example("visualize_filter.py", *SHORT_CNN, "--plot", str(plot)))
    # trained as train_convnet.py trains, and saying so in the same lines
    what, rows = training_lines(out)
    assert what == "SimpleConvNet: 100 steps of 100 (5 epochs of 2000 images), seed 0"
    assert rows == [[str(e), str(20 * e)] for e in range(5)] + [["end", "99"]]
    assert "conv1 filters (30, 1, 5, 5): trained 100 steps on 2000 images" in out
    corr = {
        m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in map(
            re.compile(r"\s*(\w+): weight std (\S+), neighbour correlation (\S+)").match, out
        )
        if m
    }
    assert list(corr) == ["before", "after"]
    assert abs(corr["before"][0] - 0.01) < 0.001  # the book's weight_init_std
    assert abs(corr["before"][1]) < 0.15  # independent random weights
    assert corr["after"][1] > 0.4  # trained filters are smooth patterns
    assert corr["after"][0] > 2 * corr["before"][0]
    assert out[-1] == f"plot: {plot.resolve()}"
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_misclassified_mnist(data_dir, tmp_path):
    """Trained and saved, then loaded: the same mistakes, without training again."""
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    pytest.importorskip("safetensors", reason="checkpoints need safetensors")
    plot, path = tmp_path / "mis.png", tmp_path / "net.safetensors"
    flags = ("--save", str(path), "--plot", str(plot))
    out = ok(run_example("misclassified_mnist.py", *SHORT_CNN, *flags))
    acc = re.search(
        r"^test accuracy: (0\.\d{4}) \((\d+) of 10000 misclassified\)$", "\n".join(out), re.M
    )
    assert acc is not None, out
    assert float(acc.group(1)) == pytest.approx(1 - int(acc.group(2)) / 10000)
    assert float(acc.group(1)) > 0.8
    # the book's dict: 20 views, each (true label, another predicted label)
    pairs = ast.literal_eval(out[out.index("{view index: (label, inference), ...}") + 1])
    assert list(pairs) == list(range(1, 21))
    assert all(0 <= t <= 9 and 0 <= y <= 9 and t != y for t, y in pairs.values())
    assert out[-1] == f"plot: {plot.resolve()}"
    assert plot.read_bytes()[:8] == PNG_MAGIC

    loaded = ok(run_example("misclassified_mnist.py", "--params", str(path), "--plot", ""))
    assert loaded[0] == f"SimpleConvNet, loaded {path}"
    assert loaded[1:] == out[-len(loaded) : -1]  # the same accuracy and mistakes


def test_half_float_network(data_dir):
    args = (*short("half_float_network.py"), "--backends", "numpy,array_api_strict")
    out = ok(run_example("half_float_network.py", *args))
    assert out[-3].split() == ["backend", "float32", "float16", "difference", "float16", "time"]
    name, acc32, acc16, diff, _ = out[-2].split()
    assert name == "numpy"
    assert float(acc32) > 0.8
    assert abs(float(acc16) - float(acc32)) <= 0.01  # 2 of 200 images at most
    assert float(diff) == pytest.approx(float(acc16) - float(acc32), abs=1e-4)
    assert out[-1] == "array_api_strict   skipped: it has no float16"


@pytest.mark.parametrize(
    ("example", "args", "message"),
    [
        ("visualize_filter.py", ("--train-size", "0"), "--train-size must be at least 1"),
        ("visualize_filter.py", ("--train-size", "70000"), "--train-size must be at most 60000"),
        ("misclassified_mnist.py", ("--iters", "0"), "--iters must be at least 1, got 0"),
        ("misclassified_mnist.py", ("--params", "a", "--save", "b"), "give one of them"),
        ("half_float_network.py", ("--test-size", "20000"), "--test-size must be at most 10000"),
        ("half_float_network.py", ("--backends", ","), "--backends names no backend"),
    ],
)
def test_ch7_examples_reject_bad_flags(example, args, message):
    result = run_example(example, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "epoch" not in result.stdout  # refused before any training


def test_train_convnet_says_1_epoch(data_dir):
    args = ("--epochs", "1", "--train-size", "200", "--test-size", "200")
    out = ok(run_example("train_convnet.py", *args))
    what, rows = training_lines(out)
    assert what == "SimpleConvNet: 2 steps of 100 (1 epoch of 200 images), seed 0"
    assert rows == [["0", "0"], ["end", "1"]]


# --------------------------------------------------------------------------------------
# What every MNIST example says or refuses before training
# --------------------------------------------------------------------------------------

MNIST_EXAMPLES = [name for name, setting in SETTINGS.items() if setting.mnist]


@pytest.fixture
def not_a_folder(tmp_path: Path) -> Path:
    """A ``--data-dir`` that is a file: an example stops there, before reading any data."""
    path = tmp_path / "file"
    path.write_text("x")
    return path


def run_on_a_busy_cpu(name: str, *args: str) -> subprocess.CompletedProcess:
    """``examples/<name>`` run as on a busy machine, whatever this one's load: xprop's busy-CPU
    check sees a load average of 7.5 on 2 cores and 2 BLAS threads."""
    code = (
        "import runpy, sys; import xprop.info as info; real = info.busy_cpu_note; "
        "info.busy_cpu_note = lambda *a: real(load=7.5, cores=2, threads=2); "
        f"sys.path.insert(0, {str(EXAMPLES)!r}); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("example", MNIST_EXAMPLES)
def test_mnist_examples_say_when_the_cpu_is_busy(example, not_a_folder):
    """The note docs/getting-started.md promises ("On a busy machine"), first on stderr:
    every example that trains on MNIST, chapters 7-8 included, says it before the data."""
    result = run_on_a_busy_cpu(example, "--data-dir", str(not_a_folder))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "note: the CPU is busy (1-minute load average 7.50 on 2 cores: other programs, or a "
        "run that just ended) and the BLAS runs 2 threads, which stall each other when they "
        "share the cores; this run may take several times longer."
    )
    assert lines[1].startswith("      One thread: OPENBLAS_NUM_THREADS=1 before the command")
    error = f"error: data_dir = {str(not_a_folder)!r} is not a folder; point it at a folder"
    assert lines[2:] == [error]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "example",
    ["train_mnist.py", "overfit_dropout.py", "train_convnet.py", "misclassified_mnist.py"],
)
def test_float16_on_numpy_says_how_slow_it_is(example, not_a_folder):
    common = _load_example("_common.py")
    flags = ("--backend", "numpy", "--data-dir", str(not_a_folder))
    error = f"error: data_dir = {str(not_a_folder)!r} is not a folder; point it at a folder\n"
    slow = run_example(example, *flags, "--dtype", "float16")
    assert slow.returncode == 2
    assert slow.stderr == common.NUMPY_FLOAT16_NOTE + "\n" + error  # first, then the data
    assert "float16 on numpy runs 50-140 times slower than float32" in slow.stderr
    assert "use --backend torch or --backend jax" in slow.stderr
    fast = run_example(example, *flags, "--dtype", "float32")
    assert fast.returncode == 2
    assert fast.stderr == error  # no note in float32


@pytest.mark.parametrize(
    ("example", "flag"),
    [
        ("train_convnet.py", "--train-size"),
        ("train_convnet.py", "--test-size"),
        ("train_deepnet.py", "--train-size"),
        ("train_deepnet.py", "--test-size"),
        ("misclassified_mnist.py", "--train-size"),
        ("half_float_network.py", "--train-size"),
        ("batch_norm_test.py", "--train-size"),
        ("overfit_weight_decay.py", "--train-size"),
        ("overfit_dropout.py", "--train-size"),
        ("train_save_reload.py", "--train-size"),
    ],
)
def test_examples_refuse_more_images_than_mnist_has(example, flag):
    """Not cut to MNIST's size without a word: refused, as visualize_filter.py refuses."""
    most, which = (60000, "training") if flag == "--train-size" else (10000, "test")
    result = run_example(example, flag, str(most + 10000))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"{example}: error: {flag} must be at most {most} (MNIST's {which} images), "
        f"got {most + 10000}"
    )
    assert result.stdout == ""
