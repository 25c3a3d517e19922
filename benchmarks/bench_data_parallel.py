"""Data-parallel training on MPI: samples per second on 1 and 2 ranks, where a step's time goes.

    python benchmarks/bench_data_parallel.py                 # 784-1024-10, global batch 1024
    python benchmarks/bench_data_parallel.py --ranks 1,2,4 --repeat 5 --json dp.json
    python benchmarks/bench_data_parallel.py --quick         # smoke run, seconds

The launcher starts ``mpiexec -n N`` workers (this script with ``--worker``) for each rank
count, interleaved and repeated (the fastest repeat of each counts, as in
``bench_train.py``), each with one BLAS thread per rank (``OPENBLAS_NUM_THREADS=1``, also
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``).  Every worker runs the data-parallel loop of
:mod:`xprop.distributed` — the same global indices on every rank, this rank's slice,
``net.gradient``, ``dp.average_gradients``, the book's update — and times each part of a
step apart (NumPy on the CPU computes synchronously, so the clock splits are honest):

- ``gradient``: gather of the slice, forward and backward;
- ``allreduce``: ``average_gradients`` (pack, ``Allreduce``, unpack), including the time a
  rank waits for the slower one;
- ``update``: ``params[key] -= lr * grads[key]``.

It also times the ``Allreduce`` of the gradient buffer alone, after a barrier: the cost of
moving the bytes, without waiting.  Then both rank counts train ``--check-steps`` (50) steps
in float64 and in float32 from the same seed, and the launcher compares the final parameters
(relative to their largest magnitude): the issue's target is 1e-12 and 1e-5.

The data are real MNIST when ``--data-dir`` or ``XPROP_DATA_DIR`` holds the four files,
else random numbers of its shape; the time of a step does not depend on which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import numpy as np
from backend_list import BACKENDS  # the tests' and nox's list of backends

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2", help="rank counts to compare (1,2)")
    parser.add_argument("--backend", default="numpy", choices=BACKENDS, help="(numpy)")
    parser.add_argument("--dtype", default="float32", help="dtype of the timed runs (float32)")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden units (1024)")
    parser.add_argument("--batch", type=int, default=1024, help="global batch (1024)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rank count (3)")
    parser.add_argument("--check-steps", type=int, default=50, help="steps of the check (50)")
    parser.add_argument("--data-dir", help="MNIST folder (default $XPROP_DATA_DIR)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("time", "check"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.batch, args.steps, args.warmup = 64, 128, 5, 1
        args.repeat, args.check_steps = 1, 5
    return args


# --------------------------------------------------------------------------------------
# Worker: runs under mpiexec
# --------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace, backend: Any) -> tuple[Any, Any, str]:
    folder = args.data_dir or os.environ.get("XPROP_DATA_DIR")
    if folder:
        from xprop.datasets import load_mnist

        (x, t), _ = load_mnist(data_dir=folder, backend=backend)
        return x, t, "MNIST"
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.random((60000, 784)))
    return x, backend.asarray(rng.integers(0, 10, 60000)), "random"


def worker(args: argparse.Namespace) -> int:
    import xprop
    from xprop.distributed import DataParallel

    dp = DataParallel()
    results: dict[str, Any] = {"ranks": dp.size}
    dtypes = [args.dtype] if args.mode == "time" else ["float64", "float32"]
    saved: dict[str, np.ndarray] = {}
    for dtype in dtypes:
        backend = dp.get_backend(args.backend, dtype=dtype)
        xp = backend.xp
        x_train, t_train, data = load_data(args, backend)
        net = xprop.TwoLayerNet(784, args.hidden, 10, backend=backend, seed=0)
        dp.broadcast_params(net.params)
        rng = backend.rng(1)
        lr = 0.1
        steps = args.warmup + args.steps if args.mode == "time" else args.check_steps
        clock = {"gradient": [], "allreduce": [], "update": [], "step": []}
        for i in range(steps):
            t0 = time.perf_counter()
            idx = dp.shard(rng.choice(x_train.shape[0], args.batch))
            grads = net.gradient(xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0))
            t1 = time.perf_counter()
            grads = dp.average_gradients(grads)
            t2 = time.perf_counter()
            for key in net.params:
                net.params[key] -= lr * grads[key]
            t3 = time.perf_counter()
            if i >= args.warmup:
                for name, dt in zip(clock, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                    clock[name].append(dt)
        if args.mode == "check":
            for key, value in net.params.items():
                saved[f"{dtype}-{key}"] = backend.to_numpy(value)
            dp = DataParallel()  # a new agreement for the next dtype's network
            continue
        # The slowest rank decides the pace: take each step's maximum over the ranks.
        per_rank = {name: np.array(v) for name, v in clock.items()}
        slowest = {name: _slowest(dp, v) for name, v in per_rank.items()}
        results.update(
            backend=backend.describe(),
            data=data,
            steps=args.steps,
            samples_per_s=args.batch * args.steps / float(np.sum(slowest["step"])),
            ms={name: 1000 * float(np.median(v)) for name, v in slowest.items()},
            allreduce_alone_ms=_allreduce_alone(dp, backend, net),
            buffer_mb=sum(int(np.prod(p.shape)) for p in net.params.values())
            * np.dtype(dtype).itemsize
            / 1e6,
        )
    if dp.is_root:
        if args.mode == "check":
            np.savez(args.out, **saved)
        else:
            args.out.write_text(json.dumps(results))
    return 0


def _slowest(dp: Any, seconds: np.ndarray) -> np.ndarray:
    """Each step's largest time over the ranks (every rank gets the same array)."""
    from mpi4py import MPI

    out = np.empty_like(seconds)
    dp.comm.Allreduce(seconds, out, op=MPI.MAX)
    return out


def _allreduce_alone(dp: Any, backend: Any, net: Any, reps: int = 20) -> float:
    """Median ms of the Allreduce of a gradient-sized buffer, after a barrier (no waiting)."""
    from mpi4py import MPI

    buffer = np.concatenate([backend.to_numpy(p).reshape(-1) for p in net.params.values()])
    times = []
    for _ in range(reps):
        dp.comm.Barrier()
        t0 = time.perf_counter()
        dp.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


# --------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("mpiexec")
    if found is None:
        sys.exit("error: mpiexec not found; install MPI with: pip install 'xprop[mpi]'")
    return found


def launch(args: argparse.Namespace, ranks: int, mode: str, out: Path) -> None:
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, "1"))
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX ranks sharing one GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        _mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", "--mode", mode,
        "--out", str(out), "--backend", args.backend, "--dtype", args.dtype,
        "--hidden", str(args.hidden), "--batch", str(args.batch), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--check-steps", str(args.check_steps),
    ]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed ({result.returncode}):\n{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    counts = [int(r) for r in args.ranks.split(",")]
    if any(args.batch % n for n in counts):
        sys.exit(f"error: --batch {args.batch} must divide by every rank count {counts}")
    best: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for n in counts:  # interleaved: a slow spell of the machine hits every count
                path = Path(tmp) / f"time-{n}-{rep}.json"
                launch(args, n, "time", path)
                run = json.loads(path.read_text())
                if n not in best or run["samples_per_s"] > best[n]["samples_per_s"]:
                    best[n] = run
        checks = {}
        for n in counts:
            path = Path(tmp) / f"check-{n}.npz"
            launch(args, n, "check", path)
            with np.load(path) as data:
                checks[n] = dict(data)
    base = best[counts[0]]
    print(
        f"data-parallel SGD, TwoLayerNet 784-{args.hidden}-10, global batch {args.batch}, "
        f"{base['backend']}, {base['data']} data, {args.steps} timed steps, fastest of "
        f"{args.repeat}; one BLAS thread per rank; {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores"
    )
    print()
    print(
        "| ranks | samples/s | vs 1 rank | ms/step | gradient | allreduce (share) "
        "| update | allreduce alone |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in counts:
        r = best[n]
        ms, speedup = r["ms"], r["samples_per_s"] / base["samples_per_s"]
        print(
            f"| {n} | {r['samples_per_s']:.0f} | {speedup:.2f}x "
            f"| {ms['step']:.2f} | {ms['gradient']:.2f} | {ms['allreduce']:.2f} "
            f"({ms['allreduce'] / ms['step']:.1%}) | {ms['update']:.2f} "
            f"| {r['allreduce_alone_ms']:.2f} ms for {r['buffer_mb']:.2f} MB |"
        )
    print()
    worst: dict[str, dict[int, float]] = {"float64": {}, "float32": {}}
    for n in counts[1:]:
        for dtype in worst:
            worst[dtype][n] = max(
                float(np.max(np.abs(checks[n][k] - ref)) / np.max(np.abs(ref)))
                for k, ref in checks[counts[0]].items()
                if k.startswith(dtype)
            )
            print(
                f"parameters after {args.check_steps} steps, {n} ranks vs {counts[0]}, "
                f"{dtype}: largest relative difference {worst[dtype][n]:.2e}"
            )
    if args.json is not None:
        record = {"args": vars(args) | {"json": str(args.json)}, "best": best, "check": worst}
        # Atomically: a temporary file in the same folder, then renamed over the target.
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
