"""Training a deep convolutional network (ch. 8.1)
===============================================

The book's ``DeepConvNet`` (three blocks of conv - relu - conv - relu - pool with 16, 16, 32,
32, 64, 64 filters of 3x3, then affine 50 - relu - dropout - affine 10 - dropout - softmax,
He initial weights) trained on MNIST with :class:`xprop.Trainer`, on any backend.  The
defaults are the book's protocol (``ch08/train_deepnet.py``): 20 epochs of the 60000
training images, minibatches of 100, Adam with learning rate 0.001, the accuracy on the first
1000 training and test images after each epoch, and at the end on all 10000 test images.
The book reports "over 99%"; docs/performance.md has the runs and their times (on one CPU
core, hours for the full protocol; minutes on a GPU).  Usage::

    python examples/train_deepnet.py                        # numpy, or $XPROP_BACKEND
    python examples/train_deepnet.py --backend torch --save deep_convnet.safetensors
    python examples/train_deepnet.py --epochs 2 --train-size 1000 --test-size 1000   # short

Options as in ``train_convnet.py``: ``--seed`` seeds the weights and Dropout's masks and, as
``seed + 1``, the minibatches; ``--save`` writes a checkpoint, ``--json`` the run's record;
``--train-size`` and ``--test-size`` shorten a run.
"""

from __future__ import annotations

import _common
import _convnet

import xprop


def main() -> int:
    args = _convnet.parse(_convnet.parser(__doc__))
    return _convnet.train(
        args,
        lambda backend, seed: xprop.DeepConvNet(
            input_dim=(1, 28, 28),
            hidden_size=50,
            output_size=10,
            backend=backend,
            seed=seed,
            check_labels=False,  # labels from a verified file: no per-step range check
        ),
    )


if __name__ == "__main__":
    _common.run(main)
