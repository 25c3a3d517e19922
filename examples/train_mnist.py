"""Training on MNIST (ch. 5.7.4)
=============================

Train the book's two-layer network on MNIST by backpropagation, on any backend.  The
defaults are the book's protocol: a 784-50-10 network, minibatches of 100 drawn with
replacement, plain SGD with learning rate 0.1, 10000 iterations, and the accuracy on all
60000 training and 10000 test images once per epoch (every ``max(60000 / 100, 1) = 600``
iterations, starting after the first one).  The final accuracy is measured after the last
iteration too.  Expect about 97% test accuracy.

Usage::

    python examples/train_mnist.py                      # numpy, or $XPROP_BACKEND
    python examples/train_mnist.py --backend torch --plot acc.png --json run.json
    python examples/train_mnist.py --backend auto       # time every backend, take the fastest
    python examples/train_mnist.py --book-loop          # the book's loop, line by line
    mpiexec -n 2 python examples/train_mnist.py --data-parallel   # on 2 processes (MPI)

By default the steps run on the fastest path of the backend (``net.compile_step``: ``jax.jit``
on JAX, a CUDA graph for PyTorch on CUDA, the eager step elsewhere), an epoch of minibatch
indices at a time; ``--book-loop`` runs the book's ``train_neuralnet.py`` loop instead
(``grad = net.gradient(...)``; ``params[key] -= lr * grad[key]``).  Both draw the same
minibatches and reach the same accuracy up to floating-point rounding.

The data come from ``$XPROP_DATA_DIR`` (or ``--data-dir``, else they are downloaded; see
:func:`xprop.datasets.load_mnist`).  ``--seed`` (default 0) seeds the initial weights and,
with ``seed + 1``, the host generator that draws the minibatch indices: one seed gives the
same run on every backend up to floating-point rounding.

``--data-parallel`` trains on every process ``mpiexec`` starts (``pip install 'xprop[mpi]'``):
``--batch-size`` is the global batch; each step every rank draws the same indices, takes its
own slice of them, and the ranks average their gradients before the book's update
(:mod:`xprop.distributed`).  The run is the single-process ``--book-loop`` run with the same
global batch and seed, up to floating-point rounding; only rank 0 prints and writes files.
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

TRAIN_SIZE = 60000  # MNIST's training images
INPUT_SIZE, OUTPUT_SIZE = 784, 10
# A training run has diverged when an epoch's mean loss exceeds the first loss this much
# (the first loss is about ln 10 = 2.3; a working run only falls from there).
DIVERGENCE_FACTOR = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--backend", help="array library, or 'auto' (default: $XPROP_BACKEND or numpy)"
    )
    parser.add_argument("--dtype", help="float dtype (default: $XPROP_DTYPE or float32)")
    parser.add_argument("--iters", type=int, default=10000, help="SGD steps (default 10000)")
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size (100)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (0.1)")
    parser.add_argument("--hidden", type=int, default=50, help="hidden units (50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--book-loop",
        action="store_true",
        help="run the book's loop (net.gradient, then params[key] -= lr * grad[key]) "
        "instead of the backend's fastest path",
    )
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="train on every MPI rank (mpiexec -n N ...), --batch-size being the global "
        "batch; needs 'xprop[mpi]'",
    )
    parser.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    parser.add_argument("--plot", type=Path, help="write the accuracy curves to this image")
    parser.add_argument("--json", type=Path, help="write the run's record to this JSON file")
    args = parser.parse_args(argv)
    for name in ("iters", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size > TRAIN_SIZE:
        parser.error(
            f"--batch-size {args.batch_size} is larger than the {TRAIN_SIZE} training images"
        )
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite positive number, got {args.lr}")
    return args


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why the requested outputs cannot be written (checked before minutes of training)."""
    for flag, path in (("--plot", args.plot), ("--json", args.json)):
        if path is None:
            continue
        folder = path.resolve().parent
        if path.is_dir():
            return f"cannot write {flag} {path}: it is a folder; name a file in it"
        if not folder.is_dir():
            return f"cannot write {flag} {path}: folder {folder} does not exist"
        try:  # the only sure test of writability: write something there
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".xprop-check-"):
                pass
        except OSError as exc:
            return f"cannot write {flag} {path}: {exc.strerror or exc}"
        if path.exists() and not os.access(path, os.W_OK):
            return f"cannot write {flag} {path}: the file exists and is read-only"
    if args.plot is not None:
        try:
            import matplotlib
        except ImportError:
            return "--plot needs matplotlib: pip install matplotlib (or 'xprop[examples]')"
        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib.figure import Figure

        formats = Figure().canvas.get_supported_filetypes()
        suffix = args.plot.suffix.lstrip(".").lower()
        if suffix not in formats:
            what = f"'.{suffix}' is not an image format" if suffix else "the name has no suffix"
            return (
                f"cannot write --plot {args.plot}: {what}; end the name in one of: "
                f".{', .'.join(sorted(formats))}"
            )
    return None


def progress_bar(total: int) -> Any:
    """A tqdm bar on an interactive terminal, else ``None`` (plain per-epoch lines)."""
    if not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, file=sys.stdout, unit="it", dynamic_ncols=True)


def evaluation_iterations(iters: int, iter_per_epoch: float) -> list[int]:
    """The iterations after which the book evaluates: those with ``i % iter_per_epoch == 0``.

    ``>=`` rather than ``%`` also handles a fractional ``iter_per_epoch`` (a batch size that
    does not divide 60000).
    """
    evals, next_eval = [], 0.0
    for i in range(iters):
        if i >= next_eval:
            evals.append(i)
            next_eval += iter_per_epoch
    return evals


def select_backend(
    args: argparse.Namespace, say: Any, dp: DataParallel | None
) -> tuple[xprop.Backend, str | None]:
    """The backend to train on; for ``auto``, the fastest for this network, with its report."""
    name = args.backend or os.environ.get("XPROP_BACKEND") or None
    if dp is not None:
        if name is not None and name.strip() == "auto":
            raise xprop.BackendError(
                "--backend auto times the backends on each rank on its own, and ranks could "
                "choose differently; name the backend with --data-parallel"
            )
        return dp.get_backend(name, dtype=args.dtype), None  # one GPU per rank
    if name is not None and name.strip() == "auto":
        dtype = args.dtype or os.environ.get("XPROP_DTYPE") or "float32"
        choice = choose_backend(INPUT_SIZE, args.hidden, OUTPUT_SIZE, args.batch_size, dtype=dtype)
        say(choice.report())
        return choice.backend, choice.report()
    return xprop.get_backend(name, dtype=args.dtype), None


def train(args: argparse.Namespace, dp: DataParallel | None = None) -> dict[str, Any]:
    """Run the book's training protocol; returns the record written by ``--json``.

    With ``dp``, every rank trains on its slice of each global minibatch and the ranks
    average their gradients; only rank 0 prints.

    Raises ``FloatingPointError`` when the loss stops being finite or training diverges.
    """
    root = dp is None or dp.is_root
    if dp is not None:
        dp.local_batch_size(args.batch_size)  # fails now, not after loading the data
    bar = progress_bar(args.iters) if root else None
    say = (print if bar is None else bar.write) if root else (lambda *_: None)
    backend, auto_report = select_backend(args, say, dp)
    xp = backend.xp
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, one_hot_label=True, data_dir=args.data_dir, backend=backend
    )
    # Labels come from a verified file: no per-step range check (a device read).
    net = xprop.TwoLayerNet(
        INPUT_SIZE, args.hidden, OUTPUT_SIZE, backend=backend, seed=args.seed, check_labels=False
    )
    rng = backend.rng(args.seed + 1)  # minibatch indices: the same numbers on every backend
    iter_per_epoch = max(TRAIN_SIZE / args.batch_size, 1)
    # Data parallel: the gradients are averaged between computing and applying them, which
    # a compiled step cannot do inside; the book's loop can.
    step = None if args.book_loop or dp is not None else net.compile_step(args.lr)
    if dp is not None:
        dp.broadcast_params(net.params)  # every rank starts from rank 0's weights
        accuracy = dp.accuracy  # each rank scores a slice of the images; counts summed
    else:
        accuracy = xprop.TwoLayerNet.accuracy
    path = "book loop" if step is None else step.kind

    record: dict[str, Any] = {
        "backend": backend.name,
        "device": str(backend.device),
        "dtype": backend.dtype_name,
        "path": path if dp is None else f"{path}, data parallel on {dp.size} ranks",
        "ranks": 1 if dp is None else dp.size,
        "seed": args.seed,
        "iters": args.iters,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "hidden": args.hidden,
        "iter_per_epoch": iter_per_epoch,
        "eval_iters": [],
        "train_loss_list": [],
        "train_acc_list": [],
        "test_acc_list": [],
    }
    if auto_report is not None:
        record["auto"] = auto_report
    say(f"{'epoch':>5}  {'train_acc':>9}  {'test_acc':>8}")

    pending: list[Any] = []  # this epoch's losses (before each update), still on the device
    eval_time = 0.0

    def evaluate(i: int) -> tuple[float, float]:
        nonlocal eval_time
        backend.synchronize(*pending, *net.params.values())  # charge training to training
        start = time.perf_counter()
        # One device read per epoch: the losses since the last evaluation.
        losses = backend.to_numpy(xp.concat([xp.reshape(p, (-1,)) for p in pending])).tolist()
        if dp is not None:  # each rank's loss is on its slice: the mean is the global batch's
            losses = dp.average(losses)
        pending.clear()
        check_divergence(losses, record["train_loss_list"], i, args, backend.dtype_name)
        record["train_loss_list"].extend(losses)
        accs = accuracy(net, x_train, t_train), accuracy(net, x_test, t_test)
        eval_time += time.perf_counter() - start
        return accs

    start = time.perf_counter()
    book_evals = evaluation_iterations(args.iters, iter_per_epoch)
    # The book's evaluations, then one more after the last step if that is not one of them.
    stops = book_evals + ([args.iters - 1] if book_evals[-1] != args.iters - 1 else [])
    done = 0  # steps taken so far
    for stop in stops:
        steps = stop + 1 - done
        if step is None:
            for _ in range(steps):  # the book's train_neuralnet.py, line by line
                batch_mask = rng.choice(TRAIN_SIZE, args.batch_size)
                if dp is not None:  # data parallel: this rank's slice of the global batch
                    batch_mask = dp.shard(batch_mask)
                x_batch = xp.take(x_train, batch_mask, axis=0)
                t_batch = xp.take(t_train, batch_mask, axis=0)
                grad = net.gradient(x_batch, t_batch)
                if dp is not None:  # the mean over the ranks: the global batch's gradient
                    grad = dp.average_gradients(grad)
                for key in net.params:
                    net.params[key] -= args.lr * grad[key]
                pending.append(net.last_layer.loss)
        else:
            # The epoch's minibatch indices in one draw and one copy to the device: the
            # same numbers as one draw per step.  The steps run in as few dispatches as
            # the backend allows and read nothing back.
            batches = rng.choice(TRAIN_SIZE, (steps, args.batch_size))
            pending.append(step.run(x_train, t_train, batches))
        done = stop + 1
        train_acc, test_acc = evaluate(stop)
        if stop in book_evals:
            label = str(len(record["train_acc_list"]))
            record["eval_iters"].append(stop)
            record["train_acc_list"].append(train_acc)
            record["test_acc_list"].append(test_acc)
        else:
            label = "end"
        say(f"{label:>5}  {train_acc:>9.4f}  {test_acc:>8.4f}")
        if bar is not None:
            bar.update(steps)
            bar.set_postfix(train_acc=f"{train_acc:.4f}", test_acc=f"{test_acc:.4f}")
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - start

    record.update(
        train_acc=train_acc,
        test_acc=test_acc,
        wall_time_s=wall,
        eval_time_s=eval_time,
        train_time_s=wall - eval_time,
        ms_per_iter=1000 * (wall - eval_time) / args.iters,
    )
    return record


def check_divergence(
    losses: list[float], earlier: list[float], i: int, args: argparse.Namespace, dtype: str
) -> None:
    """Raise ``FloatingPointError`` on a non-finite loss or an epoch far above the first loss."""
    bad = next((v for v in losses if not math.isfinite(v)), None)
    if bad is not None:
        raise FloatingPointError(
            f"the loss became {bad} by iteration {i} (lr={args.lr}, dtype={dtype}); "
            "training diverged: lower --lr"
        )
    first = (earlier or losses)[0]
    mean = sum(losses) / len(losses)
    if mean > DIVERGENCE_FACTOR * first:
        raise FloatingPointError(
            f"training diverged: the mean loss of the steps up to iteration {i} is {mean:.4g}, "
            f"more than {DIVERGENCE_FACTOR:g}x the first loss {first:.4g} (lr={args.lr}); "
            "lower --lr"
        )


def plot(record: dict[str, Any], path: Path) -> None:
    """The book's figure 5-32 style plot: train and test accuracy per epoch."""
    import matplotlib.pyplot as plt

    epochs = range(len(record["train_acc_list"]))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(epochs, record["train_acc_list"], marker="o", label="train acc")
    ax.plot(epochs, record["test_acc_list"], marker="s", linestyle="--", label="test acc")
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.legend(loc="lower right")
    ax.set_title(
        f"TwoLayerNet 784-{record['hidden']}-10 on {record['backend']} ({record['dtype']}): "
        f"test {record['test_acc']:.4f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format=fmt))
    plt.close(fig)


def save_outputs(args: argparse.Namespace, record: dict[str, Any]) -> int:
    """Write ``--json`` and ``--plot`` (each on its own: one failing never costs the other)."""
    status = 0
    if args.json is not None:
        text = json.dumps(record, indent=2) + "\n"
        try:
            write_atomically(args.json, lambda tmp: tmp.write_text(text))
        except OSError as exc:
            print(f"error: could not write --json {args.json}: {exc}", file=sys.stderr)
            status = 3
    if args.plot is not None and record.get("train_acc_list"):
        try:
            plot(record, args.plot)
        except (OSError, ValueError) as exc:
            print(f"error: could not write --plot {args.plot}: {exc}", file=sys.stderr)
            status = 3
    return status


def fail(message: str, status: int, dp: DataParallel | None) -> int:
    """Report an error and return ``status``; with several MPI ranks, end them all.

    The other ranks may be waiting for this one in a collective: aborting them (naming
    this rank and the error) is what keeps a failure on one rank from hanging the rest.
    """
    if dp is not None and dp.size > 1:
        dp.abort(message, status)
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dp = None
    if args.data_parallel:
        try:
            dp = DataParallel()  # MPI's COMM_WORLD: every process mpiexec started
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
