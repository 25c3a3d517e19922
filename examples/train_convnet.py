"""Training a convolutional network (ch. 7.5)
==========================================

The book's ``SimpleConvNet`` (conv 30 filters of 5x5 - relu - 2x2 pool - affine 100 - relu -
affine 10 - softmax) trained on MNIST with :class:`xprop.Trainer`, on any backend.  The
defaults are the book's protocol (``ch07/train_convnet.py``): 20 epochs of the 60000 training
images, minibatches of 100 drawn with replacement, Adam with learning rate 0.001, the
accuracy on the first 1000 training and test images after each epoch, and at the end on all
10000 test images.  Expect about 99% test accuracy (docs/performance.md has the runs and
their times).  Usage::

    python examples/train_convnet.py                        # numpy, or $XPROP_BACKEND
    python examples/train_convnet.py --backend jax --seed 1 --save convnet.safetensors
    python examples/train_convnet.py --epochs 3 --train-size 1000 --test-size 1000   # short

The steps run through ``net.compile_step`` (``jax.jit`` on JAX, a CUDA graph for PyTorch on
CUDA, the eager step elsewhere).  ``--seed`` seeds the weights and, as ``seed + 1``, the
minibatches.  ``--save`` writes the trained network and Adam's state (``net.load_params``
reads it back); ``--json`` the per-epoch accuracies and the wall time.
"""

from __future__ import annotations

import _common
import _convnet

import xprop


def main() -> int:
    args = _convnet.parse(_convnet.parser(__doc__))
    return _convnet.train(
        args,
        lambda backend, seed: xprop.SimpleConvNet(
            input_dim=(1, 28, 28),
            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
            hidden_size=100,
            output_size=10,
            weight_init_std=0.01,
            backend=backend,
            seed=seed,
            check_labels=False,  # labels from a verified file: no per-step range check
        ),
    )


if __name__ == "__main__":
    _common.run(main)
