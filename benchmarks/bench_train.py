"""Time xprop's training against the book's NumPy code, hand-optimised NumPy and PyTorch eager.

One run times every implementation interleaved (each repeat round runs each implementation
once, in rotating order, so drift in the machine affects all of them alike), after warm-up
rounds, with a device synchronisation before every clock read.  It prints one Markdown table
per configuration and mode (median per call, min-max, ratio to the book-style baseline and to
hand-optimised NumPy) and, with ``--json PATH``, writes every sample plus machine information.

    python benchmarks/bench_train.py --data-dir /path/to/mnist          # book + large configs
    python benchmarks/bench_train.py --quick                            # smoke run, < 20 s
    python benchmarks/bench_train.py --backend numpy,torch --json out.json
    XPROP_BACKEND=cupy python benchmarks/bench_train.py                 # adds the 4096 config

Modes: ``step`` (one gradient + update on a fixed batch), ``loop`` (the book's loop body:
random batch, gather, step, loss), ``eval`` (accuracy over all 70000 images) and
``protocol`` (the book's ch. 5 run: ``--protocol-iters`` loop bodies, accuracy on train and
test every epoch).  See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import os
import sys


def _apply_thread_flag(argv: list[str]) -> None:
    """``--threads N`` must reach OpenBLAS/MKL/OpenMP before NumPy is imported."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else None
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        if value:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


if __name__ == "__main__":
    _apply_thread_flag(sys.argv[1:])

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from backend_list import BACKENDS  # noqa: E402  (the tests' and nox's list of backends)
from reference_nets import (  # noqa: E402
    LEARNING_RATE,
    PARAM_KEYS,
    BookStyle,
    Config,
    HandOptimised,
    HostData,
    JaxJit,
    MatmulFloor,
    Runner,
    TorchEager,
    TorchGraph,
    Xprop,
    initial_params,
)

CONFIGS = {
    "book": Config("book", 784, 50, 10, 100),
    "large": Config("large", 784, 1024, 10, 1024),
    "gpu4096": Config("gpu4096", 784, 4096, 10, 4096),
}
MODES = ("step", "loop", "eval", "protocol")
MODE_TITLES = {
    "step": "one training step (gradient + update, fixed batch on the device)",
    "loop": "the book's loop body (random batch, gather, gradient, update, loss)",
    "eval": "evaluation: accuracy over all 70000 images (train + test)",
    "protocol": "the book's protocol (loop bodies + train/test accuracy every epoch)",
    "protocol-train": "the book's protocol, training only (the evaluations' time taken out)",
}
IMPLS = ("book", "book-mixed", "hand", "floor", "torch", "graph", "jax", "xprop")
XPROP_HOWS = ("book", "step", "compiled")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def load_data(data_dir: str | None, dtype: str, seed: int) -> HostData:
    """Real MNIST from ``data_dir`` when it holds the four ``.gz`` files, else random data.

    The files are read and verified by :func:`xprop.load_mnist` on the NumPy backend, so the
    arrays are plain NumPy arrays on the host.
    """
    if data_dir:
        import xprop
        from xprop.datasets import DatasetError

        try:
            (x_train, t_train), (x_test, t_test) = xprop.load_mnist(
                data_dir=data_dir, backend=xprop.get_backend("numpy", dtype=dtype)
            )
        except DatasetError as exc:
            print(f"note: {exc}; using synthetic data", file=sys.stderr)
        else:
            return HostData(
                x_train=np.asarray(x_train),
                t_train=np.asarray(t_train, dtype=np.int64),
                x_test=np.asarray(x_test),
                t_test=np.asarray(t_test, dtype=np.int64),
                source=f"MNIST from {data_dir}",
            )
    rng = np.random.default_rng(seed)
    return HostData(
        x_train=rng.random((60000, 784), dtype=np.float32).astype(dtype, copy=False),
        t_train=rng.integers(0, 10, 60000),
        x_test=rng.random((10000, 784), dtype=np.float32).astype(dtype, copy=False),
        t_test=rng.integers(0, 10, 10000),
        source="synthetic (uniform random images and labels of MNIST shape)",
    )


# --------------------------------------------------------------------------------------
# Machine information
# --------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _blas_threads() -> str:
    env = [os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")]
    return next((v for v in env if v), f"library default ({os.cpu_count()} cores)")


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "thread_env": {
            k: os.environ[k]
            for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if k in os.environ
        },
        "loadavg_1min_start": _loadavg(),
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:
        info["blas"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        info["torch"] = None
    for name in ("jax", "cupy", "array_api_strict", "array_api_compat"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    try:
        import xprop

        info["xprop"] = xprop.__version__
    except ImportError:
        info["xprop"] = None
    return info


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------


def _module_available(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _cupy_usable() -> bool:
    try:
        import cupy

        return bool(cupy.is_available())
    except ImportError:
        return False


def runner_factories(args, notes: list[str]) -> list[tuple[str, Any]]:
    """(impl group, zero-argument factory) for every row this run can time."""
    dtype = args.dtype
    wanted = set(args.impls)
    out: list[tuple[str, Any]] = []
    xprop_runners = []
    if "xprop" in wanted:
        xprop_runners = _xprop_factories(args, notes)
    gpu = any(kind == "gpu" for kind, _ in xprop_runners)
    torch_device = None
    if gpu and _module_available("torch"):
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else None

    if "book" in wanted:
        out.append(("book", lambda: BookStyle(dtype)))
    if "book-mixed" in wanted and dtype == "float32":
        out.append(("book-mixed", lambda: BookStyle(dtype, weight_dtype="float64")))
    if "hand" in wanted:
        out.append(("hand", lambda: HandOptimised(dtype)))
        if gpu and _cupy_usable():
            import cupy

            out.append(("hand", lambda: HandOptimised(dtype, module=cupy)))
    if "floor" in wanted:
        out.append(("floor", lambda: MatmulFloor(dtype)))
        if gpu and _cupy_usable():
            import cupy

            out.append(("floor", lambda: MatmulFloor(dtype, module=cupy)))
        elif torch_device is not None:
            out.append(("floor", lambda: _torch_floor(dtype, torch_device)))
    if "torch" in wanted:
        if _module_available("torch"):
            out.append(("torch", lambda: TorchEager(dtype, torch_device or "cpu")))
        else:
            notes.append("PyTorch is not installed: no PyTorch eager row")
    if "graph" in wanted and torch_device is not None:
        out.append(("graph", lambda: TorchGraph(dtype, torch_device)))
    if "jax" in wanted:
        if _module_available("jax"):
            out.append(("jax", lambda: JaxJit(dtype, _jax_device(gpu))))
        else:
            notes.append("JAX is not installed: no hand-written JAX row")
    out.extend(("xprop", factory) for _, factory in xprop_runners)
    return out


def _torch_floor(dtype: str, device: str) -> MatmulFloor:
    import torch

    floor = MatmulFloor(dtype, module=torch)
    floor.torch_device = torch.device(device)
    floor.label = f"matmul floor (torch {device})"
    return floor


def _jax_device(gpu: bool) -> Any:
    """JAX's first GPU on a GPU run (where it has one), else its first device."""
    import jax

    if gpu:
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            pass
    return jax.devices()[0]


def _xprop_factories(args, notes: list[str]) -> list[tuple[str, Any]]:
    try:
        import xprop  # noqa: F401
    except ImportError as exc:
        notes.append(f"xprop is not importable ({exc}): no xprop rows")
        return []
    out = []
    for name in args.backend:
        try:
            probe = Xprop(name, args.dtype, device=args.device, how="compiled")
        except Exception as exc:  # not installed, no device: say so, time the rest
            notes.append(f"xprop backend {name!r} skipped: {exc}")
            continue
        for how in XPROP_HOWS:
            out.append(
                (
                    probe.device_kind,
                    lambda n=name, h=how: _xprop_runner(n, args.dtype, args.device, h),
                )
            )
    return out


def _xprop_runner(name: str, dtype: str, device: Any, how: str) -> Xprop:
    runner = Xprop(name, dtype, device=device, how=how)
    if how == "compiled" and runner.label.endswith("(eager)"):
        # The eager "compiled" step is the "step" row itself: time it only where it differs,
        # in the loop and protocol (an epoch of indices at once).
        runner.modes = ("loop", "protocol")
    return runner


# --------------------------------------------------------------------------------------
# Correctness check (one step from known weights), so a fast row is not a wrong row
# --------------------------------------------------------------------------------------


def _rel_err(a: dict, b: dict) -> float:
    num = max(float(np.max(np.abs(a[k] - b[k]))) for k in PARAM_KEYS)
    den = max(float(np.max(np.abs(b[k]))) for k in PARAM_KEYS)
    return num / den if den else num


def check_runners(runners: list[Runner], data: HostData, init: dict) -> dict[str, dict]:
    """One step each; compare the weight change with ``-lr * grad`` from the book in float64.

    For xprop also compares its gradient before and after the step with the book's, which
    catches an update that changes ``net.params`` but not the arrays the layers compute with.
    """
    ref = BookStyle("float64")
    results = {}
    for r in runners:
        if isinstance(r, MatmulFloor):
            continue
        try:
            before = r.host_params()
            g0 = ref.gradient_of(before, data.x_batch, data.t_batch)
            report = {}
            if isinstance(r, Xprop):
                report["grad"] = _rel_err(r.gradient_host(data.x_batch, data.t_batch), g0)
            r.step()
            r.synchronize()
            after = r.host_params()
            delta = {k: after[k] - before[k] for k in PARAM_KEYS}
            report["update"] = _rel_err(delta, {k: -LEARNING_RATE * g0[k] for k in PARAM_KEYS})
            if isinstance(r, Xprop):
                g1 = ref.gradient_of(after, data.x_batch, data.t_batch)
                report["grad_after_step"] = _rel_err(
                    r.gradient_host(data.x_batch, data.t_batch), g1
                )
        except Exception as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        results[r.key] = report
    return results


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _time_calls(runner: Runner, fn, calls: int) -> float:
    runner.synchronize()
    start = _clock()
    for _ in range(calls):
        fn()
    runner.synchronize()
    return (_clock() - start) / calls


def measure(
    runners: list[Runner], op, calls: dict[str, int], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of ``op(runner)()``: ``rounds`` samples per runner, interleaved.

    A sample is ``calls[runner.key]`` back-to-back calls between two synchronisations;
    each round runs every runner once, starting one place further along the list.
    """
    samples: dict[str, list[float]] = {r.key: [] for r in runners}
    gc_enabled = gc.isenabled()
    try:
        for rnd in range(warmup + rounds):
            shift = rnd % len(runners)
            gc.collect()
            gc.disable()
            for r in runners[shift:] + runners[:shift]:
                seconds = _time_calls(r, op(r), calls[r.key])
                if rnd >= warmup:
                    samples[r.key].append(seconds)
            if gc_enabled:
                gc.enable()
    finally:
        if gc_enabled:
            gc.enable()
    return samples


def calibrate_calls(runners: list[Runner], op, target_s: float) -> dict[str, int]:
    """Calls per sample for each runner, so that each of its samples lasts about ``target_s``."""
    calls = {}
    for r in runners:
        _time_calls(r, op(r), 1)  # first call: compilation, allocation
        once = min(_time_calls(r, op(r), 1) for _ in range(3))
        calls[r.key] = max(1, min(10000, math.ceil(target_s / max(once, 1e-9))))
    return calls


def run_mode(
    runners: list[Runner], mode: str, cfg: Config, data: HostData, args: argparse.Namespace
) -> tuple[dict, dict[str, int], str, dict[str, tuple[float, float]], dict[str, dict]]:
    """Time one mode.

    Returns samples per runner key, calls per sample, a description, accuracies, and the
    samples of derived tables (``protocol-train``: the protocol runs minus their evaluations).
    """
    acc: dict[str, tuple[float, float]] = {}
    ipe = max(data.x_train.shape[0] // cfg.batch_size, 1)
    iters = args.protocol_iters
    if mode in ("step", "loop"):

        def op(r):
            return r.step if mode == "step" else r.loop_body

        calls = calibrate_calls(runners, op, args.sample_ms / 1e3)
        samples = measure(runners, op, calls, args.repeats, args.warmup)
        how = (
            f"{args.repeats} samples of ≈ {args.sample_ms:g} ms (back-to-back calls) per row, "
            f"after {args.warmup} warm-up rounds"
        )
        return samples, calls, how, acc, {}
    if mode == "eval":

        def op(r):
            return lambda: acc.__setitem__(r.key, r.evaluate())

        once = {r.key: 1 for r in runners}
        samples = measure(runners, op, once, args.eval_repeats, 1)
        return samples, once, f"{args.eval_repeats} samples, after 1 warm-up round", acc, {}

    eval_s: dict[str, list[float]] = {r.key: [] for r in runners}

    def op(r):
        def run():
            accs, seconds = r.protocol(iters, ipe)
            acc[r.key] = accs
            eval_s[r.key].append(seconds)

        return run

    for r in runners:  # warm-up: a short protocol (compiles the epoch-sized steps too)
        r.protocol(min(ipe + 2, iters), ipe)
    once = {r.key: 1 for r in runners}
    samples = measure(runners, op, once, args.protocol_repeats, 0)
    # The same runs without their evaluations: what the training itself took.
    train_only = {
        key: [t - e for t, e in zip(samples[key], eval_s[key], strict=True)] for key in samples
    }
    how = (
        f"{iters} iterations, evaluation every {ipe}; {args.protocol_repeats} runs per row. "
        "The accuracies are those after the last run of a network that kept training through "
        "the earlier modes and runs (higher than one fresh run's; examples/train_mnist.py "
        "gives those)"
    )
    return samples, once, how, acc, {"protocol-train": train_only}


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"


def summarise(rows: list[dict]) -> None:
    """Add median/min/max and the ratios to the baseline and to hand-optimised NumPy."""
    for row in rows:
        s = row["samples_s"]
        row["median_s"], row["min_s"], row["max_s"] = statistics.median(s), min(s), max(s)
    base = next((r for r in rows if r["key"] == "book"), None)
    hand = next((r for r in rows if r["key"] == "hand"), None)
    for row in rows:
        row["vs_book"] = row["median_s"] / base["median_s"] if base else None
        row["vs_hand"] = row["median_s"] / hand["median_s"] if hand else None


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(rows: list[dict], show_acc: bool) -> str:
    head = "| implementation | median | min – max | × book-style | × hand-opt |"
    rule = "| --- | ---: | ---: | ---: | ---: |"
    if show_acc:
        head += " train / test acc |"
        rule += " ---: |"
    lines = [head, rule]
    for row in rows:
        cells = [
            row["label"],
            fmt_time(row["median_s"]),
            f"{fmt_time(row['min_s'])} – {fmt_time(row['max_s'])}",
            _ratio(row["vs_book"]),
            _ratio(row["vs_hand"]),
        ]
        if show_acc:
            acc = row.get("accuracy")
            ok = acc and not any(math.isnan(a) for a in acc)
            cells.append(f"{acc[0]:.4f} / {acc[1]:.4f}" if ok else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TARGETS = [
    # (config, mode, runner key prefix, compared with, limit, where the target applies).
    # Rows on the other kind of device are printed too, marked informative.
    # Issue 6 (CPU, NumPy):
    ("book", "step", "xprop-numpy", "book", 0.55, "cpu"),
    ("book", "step", "xprop-numpy", "hand", 1.15, "cpu"),
    ("book", "step", "xprop-numpy", "torch-eager", 1.0, "cpu"),
    ("book", "loop", "xprop-numpy", "book", 0.55, "cpu"),
    ("book", "loop", "xprop-numpy", "hand", 1.15, "cpu"),
    ("book", "loop", "xprop-numpy", "torch-eager", 1.0, "cpu"),
    ("book", "protocol", "xprop-numpy", "book", 0.6, "cpu"),
    ("large", "step", "xprop-numpy", "hand", 1.3, "cpu"),
    # Issue 10 (GPU speed): the numpy step no slower than before (0.66 x book-style) ...
    ("book", "step", "xprop-numpy-step", "book", 0.66, "cpu"),
    # ... the fastest GPU path's training <= 0.15 x PyTorch eager on the book protocol ...
    ("book", "protocol-train", "xprop-", "torch-eager", 0.15, "gpu"),
    ("book", "protocol", "xprop-", "torch-eager", 0.15, "gpu"),
    # ... compiled steps near the hand-written compiled anchors ...
    ("book", "step", "xprop-jax-compiled", "jax-jit", 1.2, "gpu"),
    ("book", "step", "xprop-torch-compiled", "torch-graph", 1.3, "gpu"),
    # ... CuPy eager well ahead of PyTorch eager ...
    ("book", "protocol", "xprop-cupy", "torch-eager", 0.6, "gpu"),
    # ... and at 784-4096-10 every GPU path near the cuBLAS floor and ahead of torch eager.
    ("gpu4096", "step", "xprop-", "floor-", 1.15, "gpu"),
    ("gpu4096", "step", "xprop-", "torch-eager", 1.0, "gpu"),
]


def target_lines(results: list[dict]) -> list[str]:
    lines = []
    by_table: dict[tuple[str, str], list[dict]] = {}
    for row in results:
        by_table.setdefault((row["config"], row["mode"]), []).append(row)
    for cfg, mode, prefix, other, limit, where in TARGETS:
        rows = by_table.get((cfg, mode), [])
        ref = next((r for r in rows if r["key"].startswith(other)), None)
        for row in rows:
            if not row["key"].startswith(prefix) or ref is None:
                continue
            ratio = row["median_s"] / ref["median_s"]
            verdict = "met" if ratio <= limit else "missed"
            if row["device_kind"] != where or ref["device_kind"] != where:
                verdict = f"({row['device_kind']}: informative, the target is for {where})"
            # What the references reach on the same comparison says whether a target can be
            # met at all on this machine: nothing beats the matmul floor.
            reach = []
            for key in ("hand", "floor", "jax-jit", "torch-graph"):
                best = next((r for r in rows if r["key"] == key), None)
                if best is not None and other != key and best["device_kind"] == where:
                    reach.append(f"{key} {best['median_s'] / ref['median_s']:.2f}")
            lines.append(
                f"| {cfg} / {mode} | {row['label']} vs {ref['label']} | ≤ {limit:.2f} "
                f"| {ratio:.2f} | {verdict} | {', '.join(reach) or '—'} |"
            )
    if lines:
        head = (
            "| table | comparison | target | measured | | references reach |\n"
            "| --- | --- | ---: | ---: | --- | --- |"
        )
        lines = [head, *lines]
    return lines


def auto_choice_lines(configs: list[str], dtype: str) -> list[str]:
    """What ``XPROP_BACKEND=auto`` would pick for each configuration here, and why."""
    try:
        from xprop.auto import choose_backend
    except ImportError:
        return []
    lines = []
    for name in configs:
        cfg = CONFIGS[name]
        try:
            choice = choose_backend(
                cfg.input_size, cfg.hidden_size, cfg.output_size, cfg.batch_size, dtype=dtype
            )
        except Exception as exc:
            lines.append(f"- {name}: auto failed: {type(exc).__name__}: {exc}")
            continue
        lines += [f"- {name}: `{choice.backend.describe()}`", "", "```text", choice.report()]
        lines += ["```", ""]
    return lines


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backend",
        type=_csv,
        default=_csv(os.environ.get("XPROP_BACKEND", "numpy")),
        help=f"xprop backend(s), comma-separated ({', '.join(BACKENDS)}); "
        "default $XPROP_BACKEND or numpy",
    )
    p.add_argument("--device", default=None, help="xprop device (default: backend's default)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument(
        "--config",
        type=_csv,
        default=None,
        help="configs: book (784-50-10, batch 100), large (784-1024-10, batch 1024), "
        "gpu4096 (784-4096-10, batch 4096); default book,large (+gpu4096 on a GPU)",
    )
    p.add_argument(
        "--modes",
        type=_csv,
        default=None,
        help="step, loop, eval, protocol; default all four for book, step,loop,eval otherwise",
    )
    p.add_argument("--impls", type=_csv, default=list(IMPLS), help=f"rows: {','.join(IMPLS)}")
    p.add_argument("--repeats", type=int, default=30, help="samples per row, step/loop modes")
    p.add_argument("--eval-repeats", type=int, default=7, help="samples per row, eval mode")
    p.add_argument("--protocol-repeats", type=int, default=3, help="runs per row, protocol")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds before sampling")
    p.add_argument("--protocol-iters", type=int, default=10000, help="book: 10000")
    p.add_argument(
        "--sample-ms", type=float, default=20.0, help="step/loop: length of one sample (ms)"
    )
    p.add_argument("--data-dir", default=os.environ.get("XPROP_DATA_DIR"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="BLAS and torch threads")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall: perf_counter (default); cpu: process CPU time, steadier on a shared "
        "machine with --threads 1, meaningless for GPU rows",
    )
    p.add_argument("--json", dest="json_path", default=None, help="write results to PATH")
    p.add_argument("--no-check", action="store_true", help="skip the one-step correctness check")
    p.add_argument("--no-auto", action="store_true", help="skip timing auto's choice")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: book config, few repeats, 300 protocol iterations (< 20 s)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.config = args.config or ["book"]
        args.repeats, args.eval_repeats, args.protocol_repeats = 5, 2, 1
        args.warmup, args.protocol_iters, args.sample_ms = 1, 300, 5.0
    unknown = [c for c in args.config or [] if c not in CONFIGS]
    unknown += [m for m in args.modes or [] if m not in MODES]
    unknown += [i for i in args.impls if i not in IMPLS]
    unknown += [b for b in args.backend if b not in BACKENDS]
    if unknown:
        p.error(
            f"unknown choice(s) {unknown}; configs: {', '.join(CONFIGS)}; modes: "
            f"{', '.join(MODES)}; impls: {', '.join(IMPLS)}; backends: {', '.join(BACKENDS)}"
        )
    return args


def prepare_runners(
    cfg: Config, factories: list, data: HostData, init: dict, seed: int, on_gpu: bool
) -> list[Runner]:
    """Instantiate and prepare every row for ``cfg``; a row that fails to prepare is reported."""
    runners = []
    for _, factory in factories:
        r = factory()
        if cfg.name == "gpu4096" and on_gpu and r.device_kind != "gpu":
            continue  # CPU rows take seconds per step at this size
        try:
            r.prepare(cfg, data, init, seed)
        except Exception as exc:
            print(f"- note: {r.label} skipped on {cfg.name}: {type(exc).__name__}: {exc}")
            continue
        runners.append(r)
    return runners


def checked(runners: list[Runner], data: HostData, init: dict) -> tuple[list[Runner], dict]:
    """Run the correctness check, print it, and drop rows that compute something else."""
    report = check_runners(runners, data, init)
    kept = []
    for r in runners:
        rep = report.get(r.key)
        if rep is not None and ("error" in rep or max(rep.values()) > 1e-2):
            print(f"- check FAILED, row dropped: {r.label}: {rep}")
            continue
        kept.append(r)
    worst = {k: max(v.values()) for k, v in report.items() if "error" not in v}
    if worst:
        text = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
        print(f"- check (one step vs the book's float64 gradient, max rel. error): {text}")
    return kept, report


def run_config(
    cfg: Config, factories: list, data: HostData, args: argparse.Namespace, on_gpu: bool
) -> tuple[list[dict], dict, list[str]]:
    """Every mode of one configuration: prints its tables.

    Returns the result rows, the correctness report, and what failed (rows dropped by the
    check, modes that raised).
    """
    modes = args.modes or (list(MODES) if cfg.name == "book" else ["step", "loop", "eval"])
    idx = np.random.default_rng(args.seed).choice(data.x_train.shape[0], cfg.batch_size)
    data.x_batch, data.t_batch = data.x_train[idx], data.t_train[idx]
    init = initial_params(cfg, args.seed)
    print(f"\n## {cfg.name}: {cfg.shape}, batch {cfg.batch_size}, {args.dtype}\n")
    runners = prepare_runners(cfg, factories, data, init, args.seed, on_gpu)
    report = {}
    failed: list[str] = []
    if not args.no_check:
        kept, report = checked(runners, data, init)
        failed += [f"{r.label} failed its check" for r in runners if r not in kept]
        runners = kept
    results = []
    for mode in modes:
        active = [r for r in runners if mode in r.modes]
        if not active:
            continue
        try:
            samples, calls, how, acc, derived = run_mode(active, mode, cfg, data, args)
        except Exception as exc:
            print(f"- {mode}: failed\n```\n{traceback.format_exc()}```")
            failed.append(f"{mode} mode raised {type(exc).__name__}")
            continue
        for table_mode, table_samples in ((mode, samples), *derived.items()):
            rows = [
                {
                    "config": cfg.name,
                    "mode": table_mode,
                    "key": r.key,
                    "label": r.label,
                    "note": r.note,
                    "device_kind": r.device_kind,
                    "calls_per_sample": calls[r.key],
                    "samples_s": table_samples[r.key],
                    "accuracy": acc.get(r.key),
                }
                for r in active
            ]
            summarise(rows)
            results.extend(rows)
            print(f"### {cfg.name} / {table_mode}: {MODE_TITLES[table_mode]}\n")
            print(f"Per call; {how}.\n")
            print(table(rows, show_acc=table_mode in ("eval", "protocol")))
            print()
    return results, report, failed


def main(argv: list[str] | None = None) -> int:
    global _clock
    args = parse_args(argv)
    _clock = CLOCKS[args.clock]
    if args.threads:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    notes: list[str] = []
    info = machine_info()
    data = load_data(args.data_dir, args.dtype, args.seed)
    factories = runner_factories(args, notes)
    on_gpu = any(f().device_kind == "gpu" for group, f in factories if group == "xprop")
    configs = args.config or (["book", "large", "gpu4096"] if on_gpu else ["book", "large"])

    print(f"# xprop training benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"- machine: {info['cpu']}, {info['cores']} cores; numpy {info['numpy']}", end="")
    blas = info.get("blas") or {}
    print(f" ({blas.get('name')} {blas.get('version')})" if blas else "", end="")
    if info.get("torch"):
        print(f"; torch {info['torch']} ({info['torch_threads']} threads)", end="")
    if info.get("gpu"):
        print(f"; GPU {info['gpu']}", end="")
    print(f"\n- data: {data.source}; dtype {args.dtype}; lr {LEARNING_RATE}; seed {args.seed}")
    print(f"- clock: {args.clock}; BLAS threads: {_blas_threads()}")
    load = info["loadavg_1min_start"]
    if load is not None and info["cores"] and load > 0.5:
        notes.append(
            f"1-min load average was {load:.2f} at start: other processes share the CPU, "
            "so timings are noisy (with several BLAS threads, badly so)"
        )
    for note in notes:
        print(f"- note: {note}")

    results: list[dict] = []
    checks: dict[str, dict] = {}
    failures: list[str] = []
    for cfg_name in configs:
        rows, checks[cfg_name], failed = run_config(
            CONFIGS[cfg_name], factories, data, args, on_gpu
        )
        results.extend(rows)
        failures.extend(f"{cfg_name}: {what}" for what in failed)

    targets = target_lines(results)
    if targets:
        print("## Targets (informative, never asserted)\n")
        print("\n".join(targets))
    if not args.no_auto:
        print("\n## What `XPROP_BACKEND=auto` picks here\n")
        print("\n".join(auto_choice_lines(configs, args.dtype)))
    info["loadavg_1min_end"] = _loadavg()
    if args.json_path:
        payload = {
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k != "json_path"},
            "data": data.source,
            "notes": notes,
            "checks": checks,
            "results": results,
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nwrote {args.json_path}")
    if failures:
        # A row that computes something else, or a mode that crashed, makes the run fail:
        # its timings would compare different work.
        print(f"\nFAILED: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
