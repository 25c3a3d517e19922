"""Gradient check (ch. 5.7.3)
==========================

Backpropagation against numerical differentiation.  Builds the book's 784-50-10 network in
float64, takes the first 3 MNIST training samples and prints, for each parameter, the mean
absolute difference between the gradient from backpropagation and the one from central
differences, like the book::

    W1:2.6e-13  (the exact numbers depend on the random initial weights)

Differences around 1e-10 or below mean the backward pass is right.  Central differences
need two forward passes per weight (about 80000 here), so this takes a while.

Usage::

    python examples/gradient_check.py [--backend torch] [--seed 0] [--hidden 50]

A bad flag (``--hidden 0``), a backend that cannot run here or MNIST files that cannot be
found print one line saying why and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import xprop
from xprop.datasets import DatasetError, load_mnist
from xprop.info import note_busy_cpu
from xprop.nets.two_layer_net import PARAM_KEYS


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = "integer"  # argparse names the type in "invalid integer value"
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    parser.add_argument(
        "--seed", type=at_least(0), default=0, help="seed of the initial weights (0)"
    )
    parser.add_argument(
        "--hidden",
        type=at_least(1),
        default=50,
        help="hidden units (50, the book's; fewer is faster)",
    )
    parser.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    args = parser.parse_args(argv)

    note_busy_cpu()  # several BLAS threads on shared cores stall each other
    try:
        # float64: in float32 the difference quotient keeps only about 3 significant digits.
        backend = xprop.get_backend(args.backend, dtype="float64")
        (x_train, t_train), _ = load_mnist(
            one_hot_label=True, data_dir=args.data_dir, backend=backend
        )
    except (xprop.BackendError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    net = xprop.TwoLayerNet(784, args.hidden, 10, backend=backend, seed=args.seed)
    x_batch, t_batch = x_train[:3, ...], t_train[:3, ...]

    grad_numerical = net.numerical_gradient(x_batch, t_batch)
    grad_backprop = net.gradient(x_batch, t_batch)

    xp = backend.xp
    for key in PARAM_KEYS:
        diff = float(xp.mean(xp.abs(grad_backprop[key] - grad_numerical[key])))
        print(f"{key}:{diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
