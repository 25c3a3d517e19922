"""Training on MNIST (ch. 5.7.4)
=============================

The book's two-layer network trained on MNIST by backpropagation with :class:`xprop.Trainer`,
on any backend.  The defaults are the book's protocol: 784-50-10, minibatches of 100 drawn
with replacement, SGD with learning rate 0.1, 10000 iterations, the accuracy on all 60000
training and 10000 test images every 600 iterations from the first one and after the last.
Expect about 97% test accuracy.  Usage::

    python examples/train_mnist.py                      # numpy, or $XPROP_BACKEND
    python examples/train_mnist.py --backend torch --plot acc.png --json run.json
    python examples/train_mnist.py --backend auto       # time every backend, take the fastest
    python examples/train_mnist.py --book-loop          # the book's loop, line by line
    mpiexec -n 2 python examples/train_mnist.py --data-parallel   # on 2 processes (MPI)

The steps run through ``net.compile_step`` (``jax.jit`` on JAX, a CUDA graph for PyTorch on
CUDA, the eager step elsewhere); ``--book-loop`` runs the book's loop on the same minibatches.
``--seed`` seeds the weights and, as ``seed + 1``, the minibatches: the same run on every
backend up to rounding.  ``--data-parallel`` is the ``--book-loop`` run, ``--batch-size`` the
global batch, on every rank (:mod:`xprop.distributed`); rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import xprop
from xprop.auto import choose_backend
from xprop.datasets import DatasetError, load_mnist
from xprop.distributed import DataParallel, DistributedError
from xprop.files import write_atomically
from xprop.info import note_busy_cpu

TRAIN_SIZE, INPUT_SIZE, OUTPUT_SIZE = 60000, 784, 10  # MNIST's training images; the sizes
DIVERGENCE_FACTOR = 2.0  # diverged: an epoch's mean loss this far above the first (~ln 10)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    p.add_argument("--backend", help="array library, or 'auto' ($XPROP_BACKEND, else numpy)")
    p.add_argument("--dtype", help="float dtype ($XPROP_DTYPE, else float32)")
    for flag, kind, default in [
        ("--iters", int, 10000), ("--batch-size", int, 100), ("--lr", float, 0.1),
        ("--hidden", int, 50), ("--seed", int, 0),
    ]:  # fmt: skip
        p.add_argument(flag, type=kind, default=default, help=f"default {default}")
    p.add_argument("--book-loop", action="store_true", help="run the book's loop, step by step")
    p.add_argument("--data-parallel", action="store_true", help="train on every MPI rank")
    p.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    p.add_argument("--plot", type=Path, help="write the accuracy curves to this image")
    p.add_argument("--json", type=Path, help="write the run's record to this JSON file")
    args = p.parse_args(argv)
    for name in ("iters", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size > TRAIN_SIZE:
        p.error(f"--batch-size {args.batch_size} is larger than the {TRAIN_SIZE} training images")
    if not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a finite positive number, got {args.lr}")
    return args


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why the requested outputs cannot be written (checked before minutes of training)."""
    for flag, path in [("--plot", args.plot), ("--json", args.json)]:
        folder, why = path and path.resolve().parent, None
        if path is None:
            continue
        if path.is_dir():
            why = "it is a folder; name a file in it"
        elif not folder.is_dir():
            why = f"folder {folder} does not exist"
        elif path.exists() and not os.access(path, os.W_OK):
            why = "the file exists and is read-only"
        else:
            try:  # the only sure test of writability: write something there
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".xprop-check-"):
                    pass
            except OSError as exc:
                why = exc.strerror or str(exc)
        if why:
            return f"cannot write {flag} {path}: {why}"
    if args.plot is None:
        return None
    try:
        import matplotlib
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib (or 'xprop[examples]')"
    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib.figure import Figure

    formats, suffix = Figure().canvas.get_supported_filetypes(), args.plot.suffix
    if suffix[1:].lower() in formats:
        return None
    what = f"'{suffix}' is not an image format" if suffix else "the name has no suffix"
    return f"cannot write --plot {args.plot}: {what}; end it in .{', .'.join(sorted(formats))}"


def select_backend(args: argparse.Namespace, dp: DataParallel | None) -> tuple[Any, str | None]:
    """The backend to train on and, for ``auto`` (the fastest for this network), its report."""
    name = args.backend or os.environ.get("XPROP_BACKEND")
    if name is None or name.strip() != "auto":
        get = xprop.get_backend if dp is None else dp.get_backend  # one GPU per rank
        return get(name, dtype=args.dtype), None
    if dp is not None:
        raise xprop.BackendError(
            "--backend auto times the backends on each rank on its own, and ranks could "
            "choose differently; name the backend with --data-parallel"
        )
    dtype = args.dtype or os.environ.get("XPROP_DTYPE") or "float32"
    choice = choose_backend(INPUT_SIZE, args.hidden, OUTPUT_SIZE, args.batch_size, dtype=dtype)
    return choice.backend, choice.report()


def train(args: argparse.Namespace, dp: DataParallel | None = None) -> dict[str, Any]:
    """The book's protocol; returns the ``--json`` record.  ``FloatingPointError``: diverged."""
    if dp is not None:
        dp.local_batch_size(args.batch_size)  # fails now, not after loading the data
    backend, auto = select_backend(args, dp)
    if dp is None or dp.is_root:
        note_busy_cpu()  # on stderr: several BLAS threads on shared cores stall
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, one_hot_label=True, data_dir=args.data_dir, backend=backend
    )
    # Labels come from a verified file: no per-step range check (a device read).
    net = xprop.TwoLayerNet(
        INPUT_SIZE, args.hidden, OUTPUT_SIZE, backend=backend, seed=args.seed, check_labels=False
    )
    evals: list[Any] = []  # xprop.training.trainer.Evaluation: every epoch's, then the final

    def report(ev: Any) -> str | None:  # the row of an evaluation, after a divergence check
        first = trainer.train_loss_list[0]
        if ev.train_loss > DIVERGENCE_FACTOR * first:
            raise FloatingPointError(
                f"training diverged: the mean loss of the steps up to iteration {ev.iteration} "
                f"is {ev.train_loss:.4g}, more than {DIVERGENCE_FACTOR:g}x the first loss "
                f"{first:.4g} (lr={args.lr}); lower --lr"
            )
        repeat = ev.final and evals[-1].iteration == ev.iteration  # the last epoch's, again
        evals.append(ev)
        label = "end" if ev.final else ev.epoch - 1
        return None if repeat else f"{label:>5}  {ev.train_acc:>9.4f}  {ev.test_acc:>8.4f}"

    trainer = xprop.Trainer(
        net, x_train, t_train, x_test, t_test, mini_batch_size=args.batch_size,
        optimizer_param={"lr": args.lr}, max_iter=args.iters, report=report,
        seed=args.seed + 1, comm=dp, compiled=False if args.book_loop else None,
    )  # fmt: skip
    if trainer.verbose:  # rank 0
        print(
            *[auto] if auto else [], f"{'epoch':>5}  {'train_acc':>9}  {'test_acc':>8}", sep="\n"
        )
    start = time.perf_counter()
    trainer.train()
    wall, eval_time = time.perf_counter() - start, sum(ev.seconds for ev in evals)
    path = "book loop" if args.book_loop or dp is not None else trainer.step.kind
    return {
        "backend": backend.name, "device": str(backend.device), "dtype": backend.dtype_name,
        "path": path if dp is None else f"{path}, data parallel on {dp.size} ranks",
        "ranks": 1 if dp is None else dp.size, "seed": args.seed, "iters": args.iters,
        "batch_size": args.batch_size, "lr": args.lr, "hidden": args.hidden,
        "iter_per_epoch": trainer.iter_per_epoch,
        "eval_iters": [ev.iteration for ev in evals[:-1]],
        "train_loss_list": trainer.train_loss_list,
        "train_acc_list": trainer.train_acc_list, "test_acc_list": trainer.test_acc_list,
        **({"auto": auto} if auto else {}),
        "train_acc": evals[-1].train_acc, "test_acc": evals[-1].test_acc,
        "wall_time_s": wall, "eval_time_s": eval_time, "train_time_s": wall - eval_time,
        "ms_per_iter": 1000 * (wall - eval_time) / args.iters,
    }  # fmt: skip


def plot(record: dict[str, Any], path: Path) -> None:
    """The book's figure 5-32: training and test accuracy per epoch."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(record["train_acc_list"], marker="o", label="train acc")
    ax.plot(record["test_acc_list"], marker="s", linestyle="--", label="test acc")
    ax.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_title(f"TwoLayerNet 784-{record['hidden']}-10 on {record['backend']} "
                 f"({record['dtype']}): test {record['test_acc']:.4f}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    try:
        write_atomically(
            path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix[1:].lower())
        )
    finally:
        plt.close(fig)


def save_outputs(args: argparse.Namespace, record: dict[str, Any]) -> int:
    """Write ``--json`` and ``--plot``, each on its own (one failing never costs the other)."""
    status, text = 0, json.dumps(record, indent=2) + "\n"
    plot_path = args.plot if record.get("train_acc_list") else None
    for flag, path, write in [
        ("--json", args.json, lambda: write_atomically(args.json, lambda t: t.write_text(text))),
        ("--plot", plot_path, lambda: plot(record, args.plot)),
    ]:
        try:
            if path is not None:
                write()
        except (OSError, ValueError) as exc:
            print(f"error: could not write {flag} {path}: {exc}", file=sys.stderr)
            status = 3
    return status


def fail(message: str, status: int, dp: DataParallel | None) -> int:
    """Report an error; with several MPI ranks, abort them all (the others may be waiting)."""
    if dp is not None and dp.size > 1:
        dp.abort(message, status)
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dp = DataParallel() if args.data_parallel else None  # every process mpiexec started
    except DistributedError as exc:
        return fail(str(exc), 2, None)
    # Only rank 0 writes: only rank 0 checks (and ends every rank if it cannot).
    problem = check_outputs(args) if dp is None or dp.is_root else None
    if problem is not None:
        return fail(problem, 2, dp)
    try:
        record = train(args, dp)
    except FloatingPointError as exc:
        return fail(str(exc), 1, dp)
    except (xprop.BackendError, DatasetError, DistributedError) as exc:
        return fail(str(exc), 2, dp)
    if dp is not None and not dp.is_root:
        return 0
    print(
        f"backend={record['backend']} device={record['device']} dtype={record['dtype']} "
        f"path={record['path']} test_acc={record['test_acc']:.4f} "
        f"wall={record['wall_time_s']:.1f}s ms_per_iter={record['ms_per_iter']:.3f}"
    )
    return save_outputs(args, record)


if __name__ == "__main__":
    sys.exit(main())
