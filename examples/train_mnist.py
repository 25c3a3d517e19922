"""Training on MNIST (ch. 5.7.4)
=============================

The book's ``ch05/train_neuralnet.py``, on any backend: ``TwoLayerNet`` 784-50-10, 10000 SGD
steps (learning rate 0.1) on minibatches of 100 drawn with replacement, the accuracy on all
training and test images each epoch (600 steps) from the first step and after the last:
about 97% test accuracy.  The steps run through ``net.compile_step`` (``jax.jit`` on JAX, a
CUDA graph for PyTorch on CUDA, eager elsewhere), or with ``--book-loop`` the book's
``gradient`` and update, on the same minibatches (``--seed`` seeds the weights, ``seed + 1``
the minibatches).  ``--data-parallel``: the ``--book-loop`` run on every MPI rank,
``--batch-size`` the global batch, rank 0 printing.  Exit status: 0; 1 diverged; 2 a bad
flag, backend or data; 3 an output not written::

    python examples/train_mnist.py                      # numpy, or $XPROP_BACKEND
    python examples/train_mnist.py --backend torch --plot acc.png --json run.json
    python examples/train_mnist.py --backend auto       # time every backend, take the fastest
    mpiexec -n 2 python examples/train_mnist.py --data-parallel   # on 2 processes (MPI)
"""

import argparse
import sys
import time
from typing import Any

import _common

import xprop
from xprop.datasets import load_mnist
from xprop.distributed import DataParallel

TRAIN_SIZE, INPUT_SIZE, OUTPUT_SIZE = 60000, 784, 10  # MNIST's training images; the sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _common.parser(__doc__, "", json_flag=True)
    for flag, kind, default in [("--iters", int, 10000), ("--batch-size", int, 100),
                                ("--lr", float, 0.1), ("--hidden", int, 50)]:  # fmt: skip
        p.add_argument(flag, type=kind, default=default, help=f"default {default}")
    p.add_argument("--book-loop", action="store_true", help="run the book's loop, step by step")
    p.add_argument("--data-parallel", action="store_true", help="train on every MPI rank")
    args = p.parse_args(argv)
    _common.positive(p, args, "iters", "batch_size", "hidden")
    if args.batch_size > TRAIN_SIZE:
        p.error(f"--batch-size {args.batch_size} is larger than the {TRAIN_SIZE} training images")
    _common.finite_positive(p, args, "lr")
    return args


def train(args: argparse.Namespace, dp: DataParallel | None = None) -> dict[str, Any]:
    """The book's protocol; returns the ``--json`` record.  ``FloatingPointError``: diverged."""
    if dp is not None:
        dp.local_batch_size(args.batch_size)  # fails now, not after loading the data
    sizes = {"input_size": INPUT_SIZE, "hidden_size": args.hidden, "output_size": OUTPUT_SIZE}
    backend, auto = _common.select_backend(args, dp, timed=(*sizes.values(), args.batch_size))
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, one_hot_label=True, data_dir=args.data_dir, backend=backend
    )
    # Labels from a verified file need no range check per step (a read of the device).
    network = xprop.TwoLayerNet(**sizes, backend=backend, seed=args.seed, check_labels=False)
    evals: list[Any] = []  # xprop.training.trainer.Evaluation: each epoch's, then the last

    def report(ev: Any) -> str | None:  # an evaluation's row, after a divergence check
        _common.check_divergence(trainer, ev)
        again = ev.final and evals[-1].iteration == ev.iteration  # the last epoch's, again
        evals.append(ev)
        label = "end" if ev.final else ev.epoch - 1
        return None if again else f"{label:>5}  {ev.train_acc:>9.4f}  {ev.test_acc:>8.4f}"

    trainer = xprop.Trainer(
        network, x_train, t_train, x_test, t_test, mini_batch_size=args.batch_size,
        optimizer="SGD", optimizer_param={"lr": args.lr}, max_iter=args.iters,
        report=report, seed=args.seed + 1, comm=dp, compiled=False if args.book_loop else None,
    )  # fmt: skip
    if trainer.verbose:  # rank 0 prints
        print(f"{'epoch':>5}  {'train_acc':>9}  test_acc")
    start = time.perf_counter()
    trainer.train()
    wall, eval_time = time.perf_counter() - start, sum(ev.seconds for ev in evals)
    path = trainer.step.kind  # "book loop" (--book-loop, --data-parallel), or the compiled kind
    return {
        "backend": backend.name, "device": str(backend.device), "dtype": backend.dtype_name,
        "path": path if dp is None else f"{path}, data parallel on {dp.size} ranks",
        "ranks": dp.size if dp else 1, "seed": args.seed, "iters": args.iters, "lr": args.lr,
        "batch_size": args.batch_size, "hidden": args.hidden, **({"auto": auto} if auto else {}),
        "iter_per_epoch": trainer.iter_per_epoch, "eval_iters": [e.iteration for e in evals[:-1]],
        "train_loss_list": trainer.train_loss_list, "train_acc_list": trainer.train_acc_list,
        "test_acc_list": trainer.test_acc_list, "train_acc": evals[-1].train_acc,
        "test_acc": evals[-1].test_acc, "wall_time_s": wall, "eval_time_s": eval_time,
        "train_time_s": wall - eval_time, "ms_per_iter": 1000 * (wall - eval_time) / args.iters,
    }  # fmt: skip


def save_outputs(args: argparse.Namespace, record: dict[str, Any]) -> int:
    """``--json``, then ``--plot`` (the book's figure 5-32), each on its own: 0, or 3."""
    title = f"TwoLayerNet 784-{args.hidden}-10, {record['backend']}: test {record['test_acc']:.4f}"
    acc = record["train_acc_list"], record["test_acc_list"]
    return _common.write_outputs(
        ("--json", args.json, lambda path: _common.write_json(path, record)),
        ("--plot", args.plot, lambda path: _common.plot_accuracy(*acc, title, path)),
    )


def main(argv: list[str] | None = None) -> int:
    args, dp = parse_args(argv), None
    try:
        dp = DataParallel() if args.data_parallel else None  # every process mpiexec started
        _common.check_outputs(args, dp)  # on rank 0, which alone writes
        record = train(args, dp)
    except _common.ERRORS as exc:
        return _common.fail(exc, dp)  # with several ranks: ends them all
    if dp is not None and not dp.is_root:
        return 0
    keys = ("backend", "device", "dtype", "path")
    times = f"wall={record['wall_time_s']:.1f}s ms_per_iter={record['ms_per_iter']:.3f}"
    print(*(f"{k}={record[k]}" for k in keys), f"test_acc={record['test_acc']:.4f}", times)
    return save_outputs(args, record)


if __name__ == "__main__":
    sys.exit(main())
