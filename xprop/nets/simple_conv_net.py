"""The book's simple convolutional network (ch. 7.5): conv - relu - pool - affine - relu -
affine - softmax."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from xprop.backend import Backend
from xprop.checks import check_count, check_flag
from xprop.nets._conv_param import check_conv_param, check_input_dim, conv_output_side
from xprop.nets.network import Network, init_std
from xprop.nn.conv import Convolution
from xprop.nn.layers import Affine, Relu, SoftmaxWithLoss
from xprop.nn.pooling import Pooling
from xprop.typing import Array

__all__ = ["SimpleConvNet"]


class SimpleConvNet(Network):
    """``Conv1 - Relu1 - Pool1 - Affine1 - Relu2 - Affine2 - SoftmaxWithLoss``.

    Parameters
    ----------
    input_dim : (C, H, W)
        The images' shape, ``(1, 28, 28)`` for MNIST.
    conv_param : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of the convolution (the book's
        30 filters of 5x5, no padding, stride 1).  The pooling is 2x2 with stride 2.
    hidden_size, output_size : int
        Units of the hidden affine layer and classes.
    weight_init_std : float or str
        Standard deviation of the initial weights (the book's 0.01) or a scheme
        (:func:`~xprop.nets.network.init_std`, e.g. ``"he"``: ``sqrt(2 / fan_in)``).
    backend, seed, check_labels
        As for :class:`~xprop.TwoLayerNet`.

    Notes
    -----
    ``params``: ``W1`` of shape ``(FN, C, FS, FS)``, ``b1`` ``(FN,)``, ``W2``
    ``(FN * PH * PW, hidden_size)``, ``b2``, ``W3`` ``(hidden_size, output_size)``, ``b3``.
    ``predict``, ``loss``, ``gradient``, ``compile_step`` and the rest are
    :class:`~xprop.nets.network.Network`'s.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: Mapping[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float | str = 0.01,
        *,
        backend: str | Backend | None = None,
        seed: int | None = None,
        check_labels: bool = True,
    ) -> None:
        if conv_param is None:
            conv_param = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        conv = check_conv_param(conv_param)
        c, h, w = check_input_dim(input_dim)
        hidden_size = check_count(hidden_size, "hidden_size")
        output_size = check_count(output_size, "output_size")
        check_flag(check_labels, "check_labels")
        oh = conv_output_side(h, conv, "SimpleConvNet")
        ow = conv_output_side(w, conv, "SimpleConvNet")
        if oh < 2 or ow < 2:
            raise ValueError(
                f"SimpleConvNet: the convolution's output {oh}x{ow} is too small for its 2x2 "
                "pooling; use larger images, a smaller filter or more padding"
            )
        pool_output_size = conv["filter_num"] * (oh // 2) * (ow // 2)
        super().__init__(backend, seed)
        self.input_dim = (c, h, w)
        self.conv_param = conv
        self.hidden_size, self.output_size = hidden_size, output_size
        fn, fs = conv["filter_num"], conv["filter_size"]
        be, rng = self.backend, self.rng

        # initialize the weights
        self.params = {}
        self.params["W1"] = rng.normal(
            (fn, c, fs, fs), scale=init_std(weight_init_std, c * fs * fs)
        )
        self.params["b1"] = be.zeros(fn)
        self.params["W2"] = rng.normal(
            (pool_output_size, hidden_size), scale=init_std(weight_init_std, pool_output_size)
        )
        self.params["b2"] = be.zeros(hidden_size)
        self.params["W3"] = rng.normal(
            (hidden_size, output_size), scale=init_std(weight_init_std, hidden_size)
        )
        self.params["b3"] = be.zeros(output_size)

        # create the layers; the first one's input gradient (dL/d images) is never needed
        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(
            self.params["W1"], self.params["b1"], conv["stride"], conv["pad"], input_grad=False
        )
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)
        self.link({"Conv1": ("W1", "b1"), "Affine1": ("W2", "b2"), "Affine2": ("W3", "b3")})

    def accuracy(self, x: Array, t: Array, *, batch_size: int = 100) -> float:
        """:meth:`Network.accuracy <xprop.nets.network.Network.accuracy>` in chunks of the
        book's ``batch_size=100``: a convolution's column matrix grows with the batch
        (thousands of test images at once would take gigabytes)."""
        return super().accuracy(x, t, batch_size=batch_size)

    def _checkpoint_config(self) -> dict[str, Any]:
        return {
            "input_dim": list(self.input_dim),
            "conv_param": self.conv_param,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
        }
