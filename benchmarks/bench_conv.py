"""Time one training step of the book's convolutional networks (ch. 7-8) in xprop and in two
references: the book's NumPy code and PyTorch's ``F.conv2d`` with autograd.

One step is the gradient of a fixed batch (100 MNIST-sized images, float32) and Adam's update
(lr 0.001), for ``SimpleConvNet`` and ``DeepConvNet``.  Rows:

- ``book``: the book's NumPy code (``book_convnets.py``: its ``im2col``/``col2im`` loops,
  layers, networks and ``Adam``), float32; ``book-f64``: the same code in float64 (the
  book's own dtype; informative).
- ``xprop-numpy``, ``xprop-torch``, ``xprop-jax``: ``step = net.compile_step(xprop.Adam(
  lr=0.001))``, then ``step(x, t)``: the eager step on NumPy and on PyTorch's CPU, a
  ``jax.jit``-compiled step on JAX.
- ``torch``: the same network hand-written in PyTorch as users write it: ``F.conv2d``,
  ``F.max_pool2d``, ``F.cross_entropy``, ``loss.backward()``, ``torch.optim.Adam``.

Every row first computes the gradient from the same initial weights (Dropout off) and is
compared with the book's code in float64; a row off by more than 1e-2 (relative) is dropped
and the script exits with status 1.  The rows are then timed interleaved: each round times
every row once (``calls`` back-to-back steps, about ``--sample-ms`` long), in rotating order,
after a warm-up round; the table gives the median over ``--repeats`` rounds of CPU time
(``time.process_time``: on a shared machine other processes add wall time, not CPU time) and,
beside it, the wall time and the load average before and after.  One BLAS thread, one torch
thread and one XLA thread unless ``--threads N``.

    python benchmarks/bench_conv.py                     # both networks, every row installed
    python benchmarks/bench_conv.py --nets simple --rows book,xprop-numpy,torch
    python benchmarks/bench_conv.py --quick             # smoke run: 2 rounds of 1 step
"""

from __future__ import annotations

import os
import sys


def _apply_thread_flag(argv: list[str]) -> int:
    """``--threads N`` must reach OpenBLAS/MKL/OpenMP/XLA before NumPy or JAX is imported."""
    threads = 1
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
        elif arg == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    return threads


if __name__ == "__main__":
    _apply_thread_flag(sys.argv[1:])

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
import book_convnets as book  # noqa: E402
from backend_list import TIMED  # noqa: E402  (the tests' and nox's list of backends)

NETS = ("simple", "deep")
# the book's code, xprop on each backend worth timing on a CPU, PyTorch's own convolution
ROWS = ("book", "book-f64", *(f"xprop-{name}" for name in TIMED), "torch")
LR = 0.001
BATCH = 100
CHECK_TOLERANCE = 1e-2  # relative; float32 rows agree to ~1e-5, a wrong one is off by O(1)
#: (what, numerator row(s), denominator row, target): the issue's targets, never asserted.
TARGETS = {
    "simple": [("xprop NumPy / book NumPy", ("xprop-numpy",), "book", 0.35),
               ("fastest xprop / torch F.conv2d", ("xprop-numpy", "xprop-torch", "xprop-jax"),
                "torch", 1.0)],
    "deep": [("xprop NumPy / book NumPy", ("xprop-numpy",), "book", 0.6),
             ("fastest xprop / torch F.conv2d", ("xprop-numpy", "xprop-torch", "xprop-jax"),
              "torch", 2.5)],
}  # fmt: skip
# DeepConvNet's convolutions: (padding) of conv1..conv6, pools after conv2, conv4, conv6
DEEP_PADS = (1, 1, 1, 2, 1, 1)


# -- rows --------------------------------------------------------------------------------------


class Row:
    """One implementation of one network: ``step()``, ``sync()``, ``gradient()`` (checked)."""

    key = ""
    label = ""

    def step(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def gradient(self) -> dict[str, np.ndarray]:
        """The gradient at the current weights with Dropout off, as float64 host arrays."""
        raise NotImplementedError

    def last_loss(self) -> float:
        raise NotImplementedError


class BookRow(Row):
    def __init__(self, net: str, init: dict, x: np.ndarray, t: np.ndarray, dtype: str):
        self.key = "book" if dtype == "float32" else "book-f64"
        self.label = f"book's NumPy code ({dtype})"
        params = {k: v.astype(dtype) for k, v in init.items()}
        self.net = book.SimpleConvNet(params) if net == "simple" else book.DeepConvNet(params)
        self.x, self.t = x.astype(dtype), t
        self.opt = book.Adam(lr=LR)
        self._loss = math.nan

    def step(self) -> None:
        grads = self.net.gradient(self.x, self.t)
        self.opt.update(self.net.params, grads)
        self._loss = self.net.last_layer.loss

    def gradient(self) -> dict[str, np.ndarray]:
        layers = getattr(self.net, "layers", [])
        drops = [la for la in layers if isinstance(la, book.Dropout)]
        for la in drops:
            la.dropout_ratio = 0.0
        try:
            return {
                k: np.asarray(v, np.float64) for k, v in self.net.gradient(self.x, self.t).items()
            }
        finally:
            for la in drops:
                la.dropout_ratio = 0.5

    def last_loss(self) -> float:
        return float(self._loss)


class XpropRow(Row):
    def __init__(self, net: str, backend_name: str, x: np.ndarray, t: np.ndarray, seed: int):
        import xprop

        self.key = f"xprop-{backend_name}"
        self.be = xprop.get_backend(backend_name, dtype="float32")
        cls = xprop.SimpleConvNet if net == "simple" else xprop.DeepConvNet
        self.net = cls(backend=self.be, seed=seed, check_labels=False)
        self.x, self.t = self.be.asarray(x), self.be.asarray(t)
        self.optimizer = xprop.Adam(lr=LR)
        self._step = None  # made after the check: a jitted step traces at its first call
        self._loss = None
        kind = self.be.library.step_kind(self.be.device)
        self.label = f"xprop on {backend_name} ({kind} step)"

    def step(self) -> None:
        if self._step is None:
            self._step = self.net.compile_step(self.optimizer)
        self._loss = self._step(self.x, self.t)

    def sync(self) -> None:
        if self._loss is not None:
            self.be.synchronize(self._loss)

    def gradient(self) -> dict[str, np.ndarray]:
        from xprop.nn.dropout import Dropout

        drops = [la for la in self.net.layers.values() if isinstance(la, Dropout)]
        for la in drops:
            la.dropout_ratio = 0.0
        try:
            grads = self.net.gradient(self.x, self.t)
        finally:
            for la in drops:
                la.dropout_ratio = 0.5
        return {k: np.asarray(self.be.to_numpy(v), np.float64) for k, v in grads.items()}

    def last_loss(self) -> float:
        return float(np.asarray(self.be.to_numpy(self._loss)).reshape(-1)[-1])


class TorchRow(Row):
    """``F.conv2d`` + autograd + ``torch.optim.Adam``: the network as PyTorch users write it."""

    def __init__(self, net: str, init: dict, x: np.ndarray, t: np.ndarray):
        import torch

        self.torch = torch
        self.key, self.label = "torch", "torch F.conv2d + autograd + optim.Adam (CPU)"
        self.net = net
        self.p = {
            k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in init.items()
        }
        self.x = torch.tensor(x, dtype=torch.float32)
        self.t = torch.tensor(t, dtype=torch.int64)
        self.opt = torch.optim.Adam(self.p.values(), lr=LR, eps=1e-7)
        self.dropout = 0.5
        self._loss = None

    def loss(self):
        F, p, h = self.torch.nn.functional, self.p, self.x
        if self.net == "simple":
            h = F.max_pool2d(F.relu(F.conv2d(h, p["W1"], p["b1"])), 2, 2)
            h = F.relu(h.flatten(1) @ p["W2"] + p["b2"])
            y = h @ p["W3"] + p["b3"]
        else:
            for i, pad in enumerate(DEEP_PADS, start=1):
                h = F.relu(F.conv2d(h, p[f"W{i}"], p[f"b{i}"], padding=pad))
                if i % 2 == 0:
                    h = F.max_pool2d(h, 2, 2)
            h = F.relu(h.flatten(1) @ p["W7"] + p["b7"])
            h = h * (self.torch.rand_like(h) > self.dropout)  # the book's Dropout: no rescale
            y = h @ p["W8"] + p["b8"]
            y = y * (self.torch.rand_like(y) > self.dropout)
        return F.cross_entropy(y, self.t)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        self._loss = loss.detach()

    def gradient(self) -> dict[str, np.ndarray]:
        self.dropout = 0.0
        try:
            grads = self.torch.autograd.grad(self.loss(), list(self.p.values()))
        finally:
            self.dropout = 0.5
        return {k: g.double().numpy() for k, g in zip(self.p, grads, strict=True)}

    def last_loss(self) -> float:
        return float(self._loss)


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def make_rows(net: str, names: list[str], seed: int, threads: int, notes: list[str]) -> list[Row]:
    """The rows named, on the same initial weights (xprop's, seed ``seed``) and batch."""
    import xprop

    cls = xprop.SimpleConvNet if net == "simple" else xprop.DeepConvNet
    ref = cls(backend=xprop.get_backend("numpy", dtype="float32"), seed=seed)
    init = {k: np.asarray(v).copy() for k, v in ref.params.items()}
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, BATCH)
    rows: list[Row] = []
    for name in names:
        if name in ("book", "book-f64"):
            rows.append(BookRow(net, init, x, t, "float32" if name == "book" else "float64"))
        elif name == "torch" or name == "xprop-torch":
            if not _available("torch"):
                notes.append(f"{name}: torch is not installed; row left out")
                continue
            import torch

            torch.set_num_threads(threads)
            rows.append(
                TorchRow(net, init, x, t)
                if name == "torch"
                else XpropRow(net, "torch", x, t, seed)
            )
        elif name.startswith("xprop-"):
            lib = name.removeprefix("xprop-")
            if not _available(lib):
                notes.append(f"{name}: {lib} is not installed; row left out")
                continue
            rows.append(XpropRow(net, lib, x, t, seed))
    return rows


def check(rows: list[Row], net: str, seed: int) -> tuple[list[Row], dict[str, float]]:
    """Each row's gradient vs the book's in float64 (max abs error / largest gradient)."""
    import xprop

    cls = xprop.SimpleConvNet if net == "simple" else xprop.DeepConvNet
    ref_net = cls(backend=xprop.get_backend("numpy", dtype="float32"), seed=seed)
    init = {k: np.asarray(v, np.float64) for k, v in ref_net.params.items()}
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, BATCH)
    want = BookRow(net, init, x, t, "float64").gradient()
    largest = max(float(np.max(np.abs(g))) for g in want.values())
    kept, errors = [], {}
    for r in rows:
        got = r.gradient()
        err = max(float(np.max(np.abs(got[k] - want[k]))) for k in want) / largest
        errors[r.key] = err
        if err <= CHECK_TOLERANCE:
            kept.append(r)
    return kept, errors


# -- timing ------------------------------------------------------------------------------------


def _sample(r: Row, calls: int) -> tuple[float, float]:
    """Seconds per step: (CPU, wall) over ``calls`` back-to-back steps."""
    r.sync()
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        r.step()
    r.sync()
    return (time.process_time() - c0) / calls, (time.perf_counter() - w0) / calls


def measure(rows: list[Row], repeats: int, sample_ms: float) -> dict[str, dict[str, Any]]:
    """Interleaved rounds after one warm-up (the first steps compile and allocate)."""
    calls = {}
    for r in rows:
        _sample(r, 1)  # first call: compilation, allocation, Adam's moments
        once = min(_sample(r, 1)[0] for _ in range(2))
        calls[r.key] = max(1, math.ceil(sample_ms / 1e3 / max(once, 1e-6)))
    out = {r.key: {"cpu": [], "wall": [], "calls": calls[r.key]} for r in rows}
    gc_on = gc.isenabled()
    for rnd in range(repeats + 1):
        shift = rnd % len(rows)
        for r in rows[shift:] + rows[:shift]:
            gc.collect()
            gc.disable()
            try:
                cpu, wall = _sample(r, calls[r.key])
            finally:
                if gc_on:
                    gc.enable()
            if rnd:  # round 0: warm-up
                out[r.key]["cpu"].append(cpu)
                out[r.key]["wall"].append(wall)
    for r in rows:
        loss = r.last_loss()
        if not math.isfinite(loss):
            raise FloatingPointError(f"{r.key}: the loss became {loss} while timing")
        out[r.key]["loss"] = loss
    return out


# -- report ------------------------------------------------------------------------------------


def ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}"


def table(net: str, rows: list[Row], times: dict, errors: dict) -> str:
    base = times.get("book", {}).get("cpu")
    base = statistics.median(base) if base else None
    lines = [
        f"| {'SimpleConvNet' if net == 'simple' else 'DeepConvNet'} step | CPU ms (median) | "
        "min-max | wall ms (median) | / book | gradient error |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        s = times[r.key]
        med = statistics.median(s["cpu"])
        ratio = f"{med / base:.3f}" if base else "-"
        lines.append(
            f"| {r.label} | {ms(med)} | {ms(min(s['cpu']))}-{ms(max(s['cpu']))} | "
            f"{ms(statistics.median(s['wall']))} | {ratio} | {errors[r.key]:.1e} |"
        )
    return "\n".join(lines)


def target_lines(net: str, times: dict) -> list[dict[str, Any]]:
    med = {k: statistics.median(v["cpu"]) for k, v in times.items()}
    out = []
    for what, nums, den, target in TARGETS[net]:
        have = [k for k in nums if k in med]
        if not have or den not in med:
            continue
        best = min(have, key=med.__getitem__)
        ratio = med[best] / med[den]
        out.append({"net": net, "what": what, "numerator": best, "denominator": den,
                    "ratio": ratio, "target": target, "met": ratio <= target})  # fmt: skip
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    p.add_argument("--nets", default="simple,deep", help="simple,deep (default: both)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"default: {','.join(ROWS)}")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (7)")
    p.add_argument("--sample-ms", type=float, default=300.0, help="length of a sample (300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch/XLA threads (1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of one step")
    p.add_argument("--json", type=Path, help="write every sample and the machine here")
    args = p.parse_args(argv)
    args.nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    args.rows = [n.strip() for n in args.rows.split(",") if n.strip()]
    for n in args.nets:
        if n not in NETS:
            p.error(f"--nets: unknown network {n!r}; choose from {', '.join(NETS)}")
    for n in args.rows:
        if n not in ROWS:
            p.error(f"--rows: unknown row {n!r}; choose from {', '.join(ROWS)}")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    if args.quick:
        args.repeats, args.sample_ms = 2, 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = _apply_thread_flag([f"--threads={args.threads}"])
    load0 = os.getloadavg()
    print(f"# convolutional network step ({time.strftime('%Y-%m-%d %H:%M %Z')})\n")
    print(
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {np.__version__}; {threads} BLAS/torch/XLA thread(s); float32, batch {BATCH}, "
        f"gradient + Adam (lr {LR}); random images and labels of MNIST's shape"
    )
    print(f"- load average (1, 5, 15 min) at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    notes: list[str] = []
    results: dict[str, Any] = {"load_start": load0, "nets": {}}
    failed = []
    for net in args.nets:
        rows = make_rows(net, args.rows, args.seed, threads, notes)
        kept, errors = check(rows, net, args.seed)
        for r in rows:
            if r not in kept:
                failed.append(f"{net}/{r.key}: gradient off by {errors[r.key]:.2g} (relative)")
        times = measure(kept, args.repeats, args.sample_ms)
        print(f"\n{table(net, kept, times, errors)}\n")
        targets = target_lines(net, times)
        for tl in targets:
            verdict = "met" if tl["met"] else "MISSED"
            print(f"- {tl['what']} ({tl['numerator']} / {tl['denominator']}): "
                  f"{tl['ratio']:.3f}, target <= {tl['target']}: {verdict}")  # fmt: skip
        results["nets"][net] = {"times": times, "check": errors, "targets": targets}
    load1 = os.getloadavg()
    results["load_end"] = load1
    print(f"\n- load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    for note in notes:
        print(f"- note: {note}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        print(f"\nFAILED: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
