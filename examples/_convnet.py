"""What the convolutional-network examples share (ch. 7-8): the book's training protocol for
``SimpleConvNet`` and ``DeepConvNet`` and the lines it prints (every chapter 7-8 example
trains through :func:`fit`), the options and record of ``train_convnet.py`` and
``train_deepnet.py``.  Not an example itself."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import _common

import xprop
from xprop.datasets import load_mnist


def parser(doc: str) -> argparse.ArgumentParser:
    """``_common``'s options and the protocol's: epochs, training images, outputs."""
    p = _common.parser(doc, None, json_flag=True)
    p.add_argument("--epochs", type=int, default=20, help="training epochs (the book's 20)")
    p.add_argument(
        "--train-size", type=int, default=60000, help="the first this many training images"
    )
    p.add_argument(
        "--test-size", type=int, default=10000, help="the first this many test images (all)"
    )
    p.add_argument("--save", type=Path, help="write a safetensors checkpoint here at the end")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """The options, checked, and the outputs too: before minutes of training."""
    args = p.parse_args()
    _common.positive(p, args, "epochs", "train_size", "test_size")
    _common.within_mnist(p, args)
    _common.check_outputs(args)
    args.save = _common.check_output("--save", args.save)
    return args


def fit(
    net: Any, data: tuple[Any, ...], *, epochs: int, seed: int, max_iter: int | None = None
) -> tuple[xprop.Trainer, list[dict[str, Any]]]:
    """Train ``net`` on ``data`` (``(backend, x_train, t_train, x_test, t_test)``) by the
    book's protocol (Adam lr 0.001, batch 100, 1000 evaluation samples per epoch), ``epochs``
    epochs or ``max_iter`` steps, minibatches seeded by ``seed + 1``; prints what it trains,
    then a line per evaluation (epoch, step, mean loss, accuracies, seconds).  The trainer,
    and the rows it printed (``"final"``: the last, on all the test images)."""
    backend, x_train, t_train, x_test, t_test = data
    n_train, n_test = x_train.shape[0], x_test.shape[0]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def report(ev: xprop.training.trainer.Evaluation) -> str | None:
        if ev.final and rows and rows[-1]["iteration"] == ev.iteration:
            return None  # the last epoch's evaluation, again
        rows.append(
            {"epoch": ev.epoch - 1, "iteration": ev.iteration, "train_loss": ev.train_loss,
             "train_acc": ev.train_acc, "test_acc": ev.test_acc, "final": ev.final,
             "elapsed_s": time.perf_counter() - start}
        )  # fmt: skip
        label = "end" if ev.final else ev.epoch - 1
        loss = "" if math.isnan(ev.train_loss) else f"{ev.train_loss:.4f}"
        return (
            f"{label:>5}  {ev.iteration:>6}  {loss:>10}  {ev.train_acc:>9.4f}  "
            f"{ev.test_acc:>8.4f}  {time.perf_counter() - start:>8.1f}"
        )

    trainer = xprop.Trainer(
        net, x_train, t_train, x_test, t_test, epochs=epochs, mini_batch_size=100,
        optimizer="Adam", optimizer_param={"lr": 0.001},
        evaluate_sample_num_per_epoch=min(1000, n_train, n_test),  # the book's 1000
        max_iter=max_iter, report=report, seed=seed + 1,
    )  # fmt: skip
    done = trainer.max_iter / trainer.iter_per_epoch  # whole epochs unless max_iter cuts one
    print(
        f"{type(net).__name__} on {backend.describe()}, {trainer.step.kind}: "
        f"{trainer.max_iter} steps of 100 ({done:.3g} epoch{'' if done == 1 else 's'} of "
        f"{n_train} images), Adam lr 0.001, seed {seed}\n{'epoch':>5}  {'iter':>6}  "
        f"{'train_loss':>10}  {'train_acc':>9}  {'test_acc':>8}  {'time_s':>8}",
        flush=True,
    )
    trainer.train()
    return trainer, rows


def train(args: argparse.Namespace, build: Any) -> int:
    """The book's protocol (:func:`fit`) for the network ``build(backend, seed)`` makes, on
    the first ``--train-size`` and ``--test-size`` images; prints the result, writes
    ``--save`` and the run's record (``--json``); the exit status."""
    backend, _ = _common.select_backend(args)
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, flatten=False, data_dir=args.data_dir, backend=backend
    )  # (N, 1, 28, 28) images, integer labels
    x_train, t_train = x_train[: args.train_size, ...], t_train[: args.train_size, ...]
    x_test, t_test = x_test[: args.test_size, ...], t_test[: args.test_size, ...]
    net = build(backend, args.seed)
    start = time.perf_counter()
    data = (backend, x_train, t_train, x_test, t_test)
    trainer, rows = fit(net, data, epochs=args.epochs, seed=args.seed)
    wall = time.perf_counter() - start
    test_acc, path = trainer.test_acc, trainer.step.kind
    record = {
        "network": type(net).__name__, "backend": backend.name, "device": str(backend.device),
        "dtype": backend.dtype_name, "path": path, "seed": args.seed, "epochs": args.epochs,
        "train_size": x_train.shape[0], "test_size": x_test.shape[0],
        "steps": trainer.max_iter, "test_acc": test_acc, "wall_time_s": wall, "evaluations": rows,
        "test_acc_list": trainer.test_acc_list, "train_acc_list": trainer.train_acc_list,
    }  # fmt: skip
    print(
        f"{record['network']} backend={record['backend']} dtype={record['dtype']} "
        f"path={path} seed={args.seed} epochs={args.epochs} test_acc={test_acc:.4f} "
        f"({x_test.shape[0]} test images) "
        f"wall={wall:.1f}s"
    )
    return _common.write_outputs(
        ("--save", args.save, lambda path: net.save_params(path, optimizer=trainer.optimizer)),
        ("--json", args.json, lambda path: _common.write_json(path, record)),
    )
