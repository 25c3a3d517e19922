"""The first layer's filters, before and after training (ch. 7.6.1)
================================================================

The book's ``ch07/visualize_filter.py``: the 30 filters (5x5) of a
:class:`~xprop.SimpleConvNet`'s first convolution as grayscale tiles (the book's figure
7-24), at their random initial values and after training.  The book loads trained
parameters; here the network is trained first, by the book's protocol (``train_convnet.py``:
Adam with learning rate 0.001, batches of 100, 20 epochs; ``--epochs``, ``--train-size``,
``--iters`` shorten it), or loaded from a checkpoint with ``--params``.  Random filters are
noise; trained ones are smooth blobs and edges (dark on one side, light on the other): what
the first layer responds to.

A number says the same: the correlation of horizontally and vertically neighbouring weights
in the filters, about 0 for independent random values and clearly positive once the filters
have learned smooth patterns.  Even a few hundred steps on a subset show the structure.

Usage::

    python examples/visualize_filter.py         # 20 epochs; writes visualize_filter.png
    python examples/visualize_filter.py --iters 300 --train-size 5000    # short
    python examples/visualize_filter.py --params convnet.safetensors     # a trained network
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _ch7
import _common
import numpy as np


def neighbour_correlation(filters: np.ndarray) -> float:
    """Correlation of horizontally and vertically adjacent weights over all ``(FN, C, FH,
    FW)`` filters, each filter's mean removed: ~0 for noise, > 0 for smooth patterns."""
    w = filters - filters.mean(axis=(2, 3), keepdims=True)
    pairs = [
        (w[..., :, :-1], w[..., :, 1:]),  # left, right
        (w[..., :-1, :], w[..., 1:, :]),  # above, below
    ]
    a = np.concatenate([p.ravel() for p, _ in pairs])
    b = np.concatenate([q.ravel() for _, q in pairs])
    return float(np.corrcoef(a, b)[0, 1])


def filter_show(fig: Any, filters: np.ndarray, title: str, nx: int = 8) -> None:
    """The book's ``filter_show``: one tile per filter (first channel), ``nx`` per row,
    gray_r (dark = large weight), each tile scaled to its own range."""
    fn = filters.shape[0]
    ny = -(-fn // nx)
    axes = fig.subplots(ny, nx)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < fn:
            ax.imshow(filters[i, 0], cmap="gray_r", interpolation="nearest")
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=11)


def main() -> int:
    p = _ch7.parser(__doc__, "visualize_filter.png", epochs=20)
    args = p.parse_args()
    _ch7.check(p, args)
    plot = _common.check_output("--plot", args.plot, image=True)
    data = _ch7.load(args)
    backend = data[0]
    net = _ch7.network(args, backend)
    before = backend.to_numpy(net.params["W1"]).astype(np.float64)
    how = _ch7.train_or_load(args, net, data)
    after = backend.to_numpy(net.params["W1"]).astype(np.float64)

    print(f"conv1 filters {before.shape}: {how}")
    for name, w in (("before", before), ("after", after)):
        print(
            f"{name:>6}: weight std {w.std():.4f}, "
            f"neighbour correlation {neighbour_correlation(w):+.3f}"
        )

    def draw(path: Path) -> None:  # the book's figure 7-24: conv1's 30 filters
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(8, 9.2))
        top, bottom = fig.subfigures(2, 1, hspace=0.04)
        filter_show(top, before, "before training (random, std 0.01)")
        filter_show(bottom, after, f"after training ({how})")
        _common.save_figure(fig, path)

    return _common.write_outputs(("--plot", plot, draw))


if __name__ == "__main__":
    _common.run(main)
