"""Comparing the optimizers on MNIST (ch. 6.1.8)
=============================================

The book's ``ch06/optimizer_compare_mnist.py``.  One five-layer network
(784-100-100-100-100-10, ReLU, He initial weights) per optimizer, all starting from the same
weights and trained on the same minibatches of 128 images for 2000 iterations with the
book's default hyperparameters; the smoothed training loss of each is plotted against the
iterations (the book's figure 6-9).  Every 100 iterations the current losses are printed.

Usage::

    python examples/optimizer_compare_mnist.py  # writes ./optimizer_compare_mnist.png
    python examples/optimizer_compare_mnist.py --iters 200 --plot ''  # short, no plot

The recorded loss of a step is that of the forward pass which computed its gradient (the
book evaluates the loss once more after the update); the losses stay on the device and are
read every 100 iterations.
"""

from __future__ import annotations

import _common

import xprop

OPTIMIZERS = {
    "SGD": xprop.SGD,
    "Momentum": xprop.Momentum,
    "Nesterov": xprop.Nesterov,
    "AdaGrad": xprop.AdaGrad,
    "RMSprop": xprop.RMSprop,
    "Adam": xprop.Adam,
}
MARKERS = {
    "SGD": "o",
    "Momentum": "x",
    "Nesterov": "^",
    "AdaGrad": "s",
    "RMSprop": "v",
    "Adam": "D",
}
REPORT_EVERY = 100


def main() -> int:
    p = _common.parser(__doc__, "optimizer_compare_mnist.png")
    p.add_argument("--iters", type=int, default=2000, help="iterations (the book's 2000)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (128)")
    args = p.parse_args()
    _common.positive(p, args, "iters", "batch_size")
    plot = _common.check_output("--plot", args.plot, image=True)
    backend, x_train, t_train, _, _ = _common.load(args)
    xp = backend.xp

    optimizers = {name: cls() for name, cls in OPTIMIZERS.items()}  # the book's defaults
    networks = {
        name: xprop.MultiLayerNet(
            784, [100, 100, 100, 100], 10, backend=backend, seed=args.seed, check_labels=False
        )
        for name in optimizers
    }
    pending: dict[str, list] = {name: [] for name in optimizers}
    train_loss: dict[str, list[float]] = {name: [] for name in optimizers}
    rng = backend.rng(args.seed + 1)

    for i in range(args.iters):
        idx = rng.choice(x_train.shape[0], args.batch_size)
        x_batch = xp.take(x_train, idx, axis=0)
        t_batch = xp.take(t_train, idx, axis=0)
        for name, optimizer in optimizers.items():
            net = networks[name]
            optimizer.update(net.params, net.gradient(x_batch, t_batch))
            pending[name].append(net.last_loss)
        if i % REPORT_EVERY == 0 or i == args.iters - 1:
            print(f"=========== iteration:{i} ===========")
            for name in optimizers:
                losses = backend.to_numpy(xp.stack(pending[name])).tolist()
                pending[name].clear()
                train_loss[name].extend(losses)
                print(f"{name}:{losses[-1]:.4f}")

    tail = max(1, min(REPORT_EVERY, args.iters // 2))
    print(f"mean loss over the last {tail} iterations:")
    for name, losses in train_loss.items():
        print(f"  {name:>8} {sum(losses[-tail:]) / tail:.4f}")
    return _common.write_outputs(("--plot", plot, lambda path: draw(train_loss, path, backend)))


def draw(train_loss: dict[str, list[float]], path, backend) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for name, losses in train_loss.items():
        ax.plot(
            _common.smooth_curve(losses),
            marker=MARKERS[name],
            markevery=REPORT_EVERY,
            markersize=5,
            label=name,
        )
    ax.set_xlabel("iterations")
    ax.set_ylabel("loss")
    ax.set_ylim(0, 1)
    ax.set_title(f"MNIST, 784-100-100-100-100-10 on {backend.describe()}", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _common.save_figure(fig, path)


if __name__ == "__main__":
    _common.run(main)
