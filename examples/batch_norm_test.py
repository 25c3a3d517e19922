"""Training with and without Batch Normalization (ch. 6.3.2)
=========================================================

The book's ``ch06/batch_norm_test.py``.  For each of 16 standard deviations of the initial
weights (``logspace(0, -4, 16)``) two six-layer networks (784-100-100-100-100-100-10, ReLU)
— one with BatchNorm after every hidden Affine layer, one without — are trained side by side
on the same minibatches of the first 1000 MNIST training images with SGD (learning rate
0.01) for 20 epochs; their training accuracies are plotted per epoch, one panel per scale
(the book's figure 6-19).  BatchNorm learns fast at almost every scale; the plain network
only near a good one.

Usage::

    python examples/batch_norm_test.py                        # writes ./batch_norm_test.png
    python examples/batch_norm_test.py --epochs 2 --scales 2 --plot ''   # short
"""

from __future__ import annotations

import itertools
import math

import _common
import numpy as np

import xprop

HIDDEN = [100, 100, 100, 100, 100]


def main() -> int:
    p = _common.parser(__doc__, "batch_norm_test.png")
    p.add_argument("--epochs", type=int, default=20, help="epochs per network (the book's 20)")
    p.add_argument("--scales", type=int, default=16, help="weight scales tried (16)")
    p.add_argument("--train-size", type=int, default=1000, help="training images (1000)")
    args = p.parse_args()
    _common.positive(p, args, "epochs", "scales", "train_size")
    _common.within_mnist(p, args)
    plot = _common.check_output("--plot", args.plot, image=True)
    backend, x_train, t_train, _, _ = _common.load(args, args.train_size)

    n = args.scales
    scales = [10 ** (-4 * k / (n - 1)) if n > 1 else 1.0 for k in range(n)]  # logspace(0, -4)
    results = []
    for k, scale in enumerate(scales):
        print(f"============== {k + 1}/{n}: weight std {scale:.3g} ==============")
        # Without BatchNorm, large initial weights make the activations overflow to inf and
        # NaN (accuracy 0.1): that is the point of the experiment, so NumPy need not warn.
        with np.errstate(over="ignore", invalid="ignore"):
            results.append(train(args, backend, x_train, t_train, scale))
    return _common.write_outputs(("--plot", plot, lambda path: draw(scales, results, path)))


def train(args, backend, x_train, t_train, scale: float) -> tuple[list[float], list[float]]:
    """Train the two networks on the same batches; their training accuracy per epoch."""
    xp = backend.xp

    def make(use_batchnorm: bool) -> xprop.MultiLayerNetExtend:
        return xprop.MultiLayerNetExtend(
            784,
            HIDDEN,
            10,
            weight_init_std=scale,
            use_batchnorm=use_batchnorm,
            backend=backend,
            seed=args.seed,
            check_labels=False,
        )

    bn_network, network = make(True), make(False)
    optimizer = xprop.SGD(lr=0.01)  # stateless: one serves both networks, as in the book
    train_size = x_train.shape[0]
    batch_size = min(100, train_size)
    iter_per_epoch = max(train_size / batch_size, 1)
    rng = backend.rng(args.seed + 1)
    acc: list[float] = []
    bn_acc: list[float] = []
    next_eval = 0.0
    for i in itertools.count():
        idx = rng.choice(train_size, batch_size)
        x_batch, t_batch = xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0)
        for net in (bn_network, network):
            optimizer.update(net.params, net.gradient(x_batch, t_batch))
        if i >= next_eval:  # the book: i % iter_per_epoch == 0, after this step's update
            next_eval += iter_per_epoch
            acc.append(network.accuracy(x_train, t_train))
            bn_acc.append(bn_network.accuracy(x_train, t_train))
            print(f"epoch:{len(acc) - 1} | {acc[-1]:.4f} - {bn_acc[-1]:.4f}")
            if len(acc) >= args.epochs:
                break
    return acc, bn_acc


def draw(scales: list[float], results: list, path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(scales))
    rows = math.ceil(len(scales) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for k, (scale, (acc, bn_acc)) in enumerate(zip(scales, results, strict=True)):
        ax = axes[k // cols][k % cols]
        epochs = range(len(acc))
        ax.plot(epochs, bn_acc, label="Batch Normalization")
        ax.plot(epochs, acc, linestyle="--", label="Normal (without BatchNorm)")
        ax.set_title(f"W: {scale:.3g}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.0)
        if k % cols:
            ax.set_yticks([])
        else:
            ax.set_ylabel("accuracy")
        if k >= len(scales) - cols:
            ax.set_xlabel("epochs")
    for k in range(len(scales), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _common.save_figure(fig, path)


if __name__ == "__main__":
    _common.run(main)
