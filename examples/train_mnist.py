"""Train the book's two-layer network on MNIST by backpropagation (ch. 5.7.4), on any backend.

The defaults are the book's protocol: a 784-50-10 network, minibatches of 100 drawn with
replacement, plain SGD with learning rate 0.1, 10000 iterations, and the accuracy on all
60000 training and 10000 test images once per epoch (every ``max(60000 / 100, 1) = 600``
iterations, starting after the first one).  The final accuracy is measured after the last
iteration too.  Expect about 97% test accuracy.

    python examples/train_mnist.py                      # numpy, or $XPROP_BACKEND
    python examples/train_mnist.py --backend torch --plot acc.png --json run.json

The data come from ``$XPROP_DATA_DIR`` (or ``--data-dir``, else they are downloaded; see
:func:`xprop.datasets.load_mnist`).  ``--seed`` (default 0) seeds the initial weights and,
with ``seed + 1``, the host generator that draws the minibatch indices: one seed gives the
same run on every backend up to floating-point rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import xprop
from xprop.datasets import DatasetError, load_mnist

PARAM_KEYS = ("W1", "b1", "W2", "b2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    parser.add_argument("--dtype", help="float dtype (default: $XPROP_DTYPE or float32)")
    parser.add_argument("--iters", type=int, default=10000, help="SGD steps (default 10000)")
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size (100)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (0.1)")
    parser.add_argument("--hidden", type=int, default=50, help="hidden units (50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    parser.add_argument("--plot", type=Path, help="write the accuracy curves to this PNG")
    parser.add_argument("--json", type=Path, help="write the run's record to this JSON file")
    args = parser.parse_args(argv)
    for name in ("iters", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    return args


def check_outputs(args: argparse.Namespace) -> str | None:
    """Why the requested outputs cannot be written (checked before minutes of training)."""
    for path in (args.plot, args.json):
        if path is not None and not path.resolve().parent.is_dir():
            return f"cannot write {path}: folder {path.resolve().parent} does not exist"
    if args.plot is not None:
        try:
            import matplotlib
        except ImportError:
            return "--plot needs matplotlib: pip install matplotlib (or 'xprop[examples]')"
        matplotlib.use("Agg")  # files only: no display needed
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


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the book's training loop; returns the record written by ``--json``.

    Raises ``FloatingPointError`` when the loss stops being finite.
    """
    backend = xprop.get_backend(args.backend, dtype=args.dtype)
    xp = backend.xp
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, one_hot_label=True, data_dir=args.data_dir, backend=backend
    )
    train_size = x_train.shape[0]
    # Labels come from a verified file: skip the per-step range check (a device read).
    net = xprop.TwoLayerNet(
        784, args.hidden, 10, backend=backend, seed=args.seed, check_labels=False
    )
    rng = backend.rng(args.seed + 1)
    iter_per_epoch = max(train_size / args.batch_size, 1)

    record: dict[str, Any] = {
        "backend": backend.name,
        "device": str(backend.device),
        "dtype": backend.dtype_name,
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
    bar = progress_bar(args.iters)
    say = print if bar is None else bar.write
    say(f"{'epoch':>5}  {'train_acc':>9}  {'test_acc':>8}")

    pending: list[Any] = []  # this epoch's losses, still on the device
    eval_time = 0.0

    def evaluate(i: int) -> tuple[float, float]:
        nonlocal eval_time
        backend.synchronize()  # charge queued training work to training, not evaluation
        start = time.perf_counter()
        # One device read per epoch: the losses since the last evaluation.
        losses = backend.to_numpy(xp.stack(pending)).tolist()
        pending.clear()
        record["train_loss_list"].extend(losses)
        bad = next((v for v in losses if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(
                f"the loss became {bad} by iteration {i} (lr={args.lr}, "
                f"dtype={backend.dtype_name}); training diverged: lower --lr"
            )
        accs = net.accuracy(x_train, t_train), net.accuracy(x_test, t_test)
        eval_time += time.perf_counter() - start
        return accs

    start = time.perf_counter()
    next_eval = 0.0
    for i in range(args.iters):
        # Indices drawn on the host (same numbers on every backend), gathered on the device.
        idx = rng.choice(train_size, args.batch_size)
        x_batch = xp.take(x_train, idx, axis=0)
        t_batch = xp.take(t_train, idx, axis=0)

        grad = net.gradient(x_batch, t_batch)
        for key in PARAM_KEYS:
            net.params[key] -= args.lr * grad[key]
        pending.append(net.last_layer.loss)  # the batch's loss before this update

        # The book evaluates when i % iter_per_epoch == 0; ">=" also handles a fractional
        # iter_per_epoch (a batch size that does not divide 60000).
        if i >= next_eval:
            next_eval += iter_per_epoch
            train_acc, test_acc = evaluate(i)
            record["eval_iters"].append(i)
            record["train_acc_list"].append(train_acc)
            record["test_acc_list"].append(test_acc)
            say(f"{len(record['train_acc_list']) - 1:>5}  {train_acc:>9.4f}  {test_acc:>8.4f}")
            if bar is not None:
                bar.set_postfix(train_acc=f"{train_acc:.4f}", test_acc=f"{test_acc:.4f}")
        if bar is not None:
            bar.update(1)
    if record["eval_iters"][-1] != args.iters - 1:
        train_acc, test_acc = evaluate(args.iters - 1)
        say(f"{'end':>5}  {train_acc:>9.4f}  {test_acc:>8.4f}")
    if bar is not None:
        bar.set_postfix(train_acc=f"{train_acc:.4f}", test_acc=f"{test_acc:.4f}")
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_outputs(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        record = train(args)
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (xprop.BackendError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"backend={record['backend']} device={record['device']} dtype={record['dtype']} "
        f"test_acc={record['test_acc']:.4f} wall={record['wall_time_s']:.1f}s "
        f"ms_per_iter={record['ms_per_iter']:.3f}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.plot is not None:
        plot(record, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
