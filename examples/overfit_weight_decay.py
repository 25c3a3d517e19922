"""Overfitting and weight decay (ch. 6.4.1-6.4.2)
==============================================

The book's ``ch06/overfit_weight_decay.py``.  A seven-layer network
(784-100-100-100-100-100-100-10, ReLU, He initial weights) trained on only the first 300
MNIST training images with SGD (learning rate 0.01, batches of 100) for 201 epochs overfits:
training accuracy reaches 1 while test accuracy stays far below.  L2 weight decay
(``--lambda``, the book's 0.1; 0 for none) narrows the gap.  The training and test
accuracies per epoch are plotted (the book's figures 6-20 and 6-21).

Usage::

    python examples/overfit_weight_decay.py                   # writes ./overfit_weight_decay.png
    python examples/overfit_weight_decay.py --lambda 0        # the overfitting run
    python examples/overfit_weight_decay.py --epochs 3 --plot ''  # short
"""

from __future__ import annotations

import itertools

import _common

import xprop


def main() -> int:
    p = _common.parser(__doc__, "overfit_weight_decay.png")
    p.add_argument("--epochs", type=int, default=201, help="epochs (the book's 201)")
    p.add_argument(
        "--lambda", dest="lam", type=float, default=0.1, help="weight decay strength (0.1)"
    )
    p.add_argument("--train-size", type=int, default=300, help="training images (300)")
    args = p.parse_args()
    _common.positive(p, args, "epochs", "train_size")
    _common.within_mnist(p, args)
    if not args.lam >= 0:
        p.error("--lambda must be >= 0")
    plot = _common.check_output("--plot", args.plot, image=True)
    backend, x_train, t_train, x_test, t_test = _common.load(args, args.train_size)
    xp = backend.xp

    network = xprop.MultiLayerNet(
        784, [100] * 6, 10, weight_decay_lambda=args.lam, backend=backend, seed=args.seed
    )
    optimizer = xprop.SGD(lr=0.01)
    train_size = x_train.shape[0]
    batch_size = min(100, train_size)
    iter_per_epoch = max(train_size / batch_size, 1)
    rng = backend.rng(args.seed + 1)
    train_acc_list: list[float] = []
    test_acc_list: list[float] = []
    next_eval = 0.0
    for i in itertools.count():
        idx = rng.choice(train_size, batch_size)
        x_batch, t_batch = xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0)
        optimizer.update(network.params, network.gradient(x_batch, t_batch))
        if i >= next_eval:  # the book: i % iter_per_epoch == 0
            next_eval += iter_per_epoch
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
            epoch = len(train_acc_list) - 1
            print(
                f"epoch:{epoch}, train acc:{train_acc_list[-1]:.4f}, "
                f"test acc:{test_acc_list[-1]:.4f}"
            )
            if len(train_acc_list) >= args.epochs:
                break
    title = f"weight decay lambda = {args.lam:g}, {train_size} training images"
    return _common.write_outputs(
        (
            "--plot",
            plot,
            lambda path: _common.plot_accuracy(train_acc_list, test_acc_list, title, path),
        )
    )


if __name__ == "__main__":
    _common.run(main)
