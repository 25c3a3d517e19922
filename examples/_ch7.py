"""What the chapter-7 and 8 examples share: MNIST as images, a convolutional network trained
by the book's protocol (or loaded from a checkpoint), predictions on the test set.  Not an
example itself."""

from __future__ import annotations

import argparse
from typing import Any

import _common
import _convnet
import numpy as np

import xprop
from xprop.datasets import load_mnist


def parser(doc: str, plot: str | None, epochs: int) -> argparse.ArgumentParser:
    """``_common.parser`` plus the training options: ``--epochs``, ``--train-size``,
    ``--iters``, ``--params`` (load instead of training), ``--save`` and ``--deep``."""
    p = _common.parser(doc, plot)
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs of training ({epochs})")
    p.add_argument(
        "--train-size", type=int, default=60000, help="training images, the first ones (60000)"
    )
    p.add_argument("--iters", type=int, help="train exactly this many steps (default: epochs)")
    p.add_argument("--params", help="load this checkpoint (.safetensors) instead of training")
    p.add_argument("--save", help="save the trained network to this checkpoint")
    p.add_argument("--deep", action="store_true", help="DeepConvNet (ch. 8), not SimpleConvNet")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad training options before loading anything (status 2, the flag named)."""
    _common.positive(p, args, "epochs", "train_size")
    _common.within_mnist(p, args)
    if args.iters is not None and args.iters < 1:
        p.error(f"--iters must be at least 1, got {args.iters}")
    if args.params is not None and args.save is not None:
        p.error("--params loads a trained network and --save stores one: give one of them")
    if args.seed < 0:
        p.error(f"--seed must be an integer >= 0, got {args.seed}")


def load(args: argparse.Namespace, backend: Any = None) -> tuple[Any, ...]:
    """``(backend, x_train, t_train, x_test, t_test)``: images ``(N, 1, 28, 28)`` in [0, 1],
    integer labels, the first ``args.train_size`` training images."""
    backend = backend or _common.select_backend(args)[0]
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, flatten=False, data_dir=args.data_dir, backend=backend
    )
    n = args.train_size
    return backend, x_train[:n, ...], t_train[:n, ...], x_test, t_test


def network(args: argparse.Namespace, backend: Any) -> Any:
    """The book's SimpleConvNet (or, with ``--deep``, DeepConvNet) on ``backend``."""
    if args.deep:
        return xprop.DeepConvNet(backend=backend, seed=args.seed, check_labels=False)
    return xprop.SimpleConvNet(backend=backend, seed=args.seed, check_labels=False)


def train_or_load(args: argparse.Namespace, net: Any, data: tuple[Any, ...]) -> str:
    """Load ``--params`` into ``net``, or train it by the book's protocol; say which."""
    if args.params is not None:
        net.load_params(args.params)
        return f"loaded {args.params}"
    trainer, _ = _convnet.fit(net, data, epochs=args.epochs, seed=args.seed, max_iter=args.iters)
    if args.save is not None:
        net.save_params(args.save)
        print(f"saved {args.save}")
    return f"trained {trainer.max_iter} steps on {data[1].shape[0]} images"


def predicted_labels(net: Any, x: Any, batch_size: int = 1000) -> np.ndarray:
    """The class each image of ``x`` is given (arg-max score), on the host: ``(N,)`` int."""
    backend = net.backend
    xp = backend.xp
    out = []
    for i in range(0, x.shape[0], batch_size):
        scores = net.predict(x[i : i + batch_size, ...])
        out.append(backend.to_numpy(xp.argmax(scores, axis=1)))
    return np.concatenate(out).astype(np.int64)
