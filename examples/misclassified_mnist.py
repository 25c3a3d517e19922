"""Misclassified test images (ch. 8.1.2)
=====================================

The book's ``ch08/misclassified_mnist.py``: the first 20 test images a trained network gets
wrong, in a 4x5 grid, each titled with the true label and the network's answer (the book's
figure 8-3).  The book loads a trained :class:`~xprop.DeepConvNet`; here a
:class:`~xprop.SimpleConvNet` (``--deep``: DeepConvNet) is trained by the book's protocol
(Adam with learning rate 0.001, batches of 100; ``--epochs`` 20 by default, ``--train-size``
and ``--iters`` shorten it), or loaded from a checkpoint with ``--params``.  Many of the
mistakes are images a person would hesitate over too.  The book's dictionary
``{view index: (label, inference)}`` is printed as well.

Usage::

    python examples/misclassified_mnist.py                     # writes misclassified_mnist.png
    python examples/misclassified_mnist.py --iters 300 --train-size 5000    # short
    python examples/misclassified_mnist.py --deep --params deep_convnet.safetensors
"""

from __future__ import annotations

from pathlib import Path

import _ch7
import _common
import numpy as np

MAX_VIEW = 20  # the book's grid: 4 rows of 5


def main() -> int:
    p = _ch7.parser(__doc__, "misclassified_mnist.png", epochs=20)
    args = p.parse_args()
    _ch7.check(p, args)
    plot = _common.check_output("--plot", args.plot, image=True)
    data = _ch7.load(args)
    backend, _, _, x_test, t_test = data
    net = _ch7.network(args, backend)
    how = _ch7.train_or_load(args, net, data)

    predicted = _ch7.predicted_labels(net, x_test)
    labels = backend.to_numpy(t_test).astype(np.int64)
    wrong = np.flatnonzero(predicted != labels)
    n = labels.shape[0]
    print(f"{type(net).__name__}, {how}")
    print(f"test accuracy: {1 - wrong.size / n:.4f} ({wrong.size} of {n} misclassified)")
    shown = wrong[:MAX_VIEW]
    mis_pairs = {i + 1: (int(labels[k]), int(predicted[k])) for i, k in enumerate(shown)}
    print("======= misclassified result =======")
    print("{view index: (label, inference), ...}")
    print(mis_pairs)

    def draw(path: Path) -> None:  # the book's figure: the first misclassified images
        import matplotlib.pyplot as plt

        images = backend.to_numpy(x_test[: int(shown[-1]) + 1, ...]) if shown.size else None
        fig, axes = plt.subplots(4, 5, figsize=(6.4, 6.0))
        for i, ax in enumerate(axes.ravel()):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= shown.size:
                ax.axis("off")
                continue
            k = int(shown[i])
            ax.imshow(images[k, 0], cmap="gray_r", interpolation="nearest")
            ax.set_title(f"{labels[k]} as {predicted[k]}", fontsize=9, color="tab:red")
        fig.suptitle(
            f"{type(net).__name__}: the first {shown.size} misclassified test images\n"
            f"(true label as predicted label; {wrong.size} of {n} wrong)",
            fontsize=10,
        )
        fig.tight_layout()
        _common.save_figure(fig, path)

    return _common.write_outputs(("--plot", plot, draw))


if __name__ == "__main__":
    _common.run(main)
