"""The book's deep convolutional network (ch. 8.1): three blocks of conv - relu - conv -
relu - pool, then affine - relu - dropout - affine - dropout - softmax, He initialisation."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from xprop.backend import Backend
from xprop.checks import check_count, check_flag
from xprop.nets._conv_param import check_conv_param, check_input_dim, conv_output_side
from xprop.nets.network import Network
from xprop.nn.conv import Convolution
from xprop.nn.dropout import Dropout
from xprop.nn.layers import Affine, Relu, SoftmaxWithLoss
from xprop.nn.pooling import Pooling
from xprop.typing import Array

__all__ = ["DeepConvNet"]


def _conv(filter_num: int, pad: int = 1) -> dict[str, int]:
    return {"filter_num": filter_num, "filter_size": 3, "pad": pad, "stride": 1}


class DeepConvNet(Network):
    """The book's network for 99% on MNIST, with its layers, keys and scales.

    ``conv1 - relu - conv2 - relu - pool - conv3 - relu - conv4 - relu - pool - conv5 -
    relu - conv6 - relu - pool - affine - relu - dropout - affine - dropout - softmax``;
    the pools are 2x2 with stride 2, the dropouts drop half.  ``params`` ``W1`` ... ``W6``
    (filters), ``W7``, ``W8`` (affine) and their biases; every weight drawn with He's scale
    ``sqrt(2 / fan_in)`` (``fan_in`` = channels x filter area, or the affine input size).

    Parameters
    ----------
    input_dim : (C, H, W)
        ``(1, 28, 28)`` for MNIST.
    conv_param_1, ..., conv_param_6 : dict
        The book's: 16, 16, 32, 32, 64, 64 filters of 3x3, pad 1 (``conv_param_4`` pad 2),
        stride 1.
    hidden_size, output_size : int
        50 and 10.
    backend, seed, check_labels
        As for :class:`~xprop.TwoLayerNet`.
    dropout_device_masks : bool
        As for :class:`~xprop.MultiLayerNetExtend` (default: device masks, the same on
        every backend and training path).
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param_1: Mapping[str, int] | None = None,
        conv_param_2: Mapping[str, int] | None = None,
        conv_param_3: Mapping[str, int] | None = None,
        conv_param_4: Mapping[str, int] | None = None,
        conv_param_5: Mapping[str, int] | None = None,
        conv_param_6: Mapping[str, int] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        backend: str | Backend | None = None,
        seed: int | None = None,
        check_labels: bool = True,
        dropout_device_masks: bool = True,
    ) -> None:
        defaults = [_conv(16), _conv(16), _conv(32), _conv(32, pad=2), _conv(64), _conv(64)]
        given = [
            conv_param_1,
            conv_param_2,
            conv_param_3,
            conv_param_4,
            conv_param_5,
            conv_param_6,
        ]
        convs = [
            check_conv_param(p if p is not None else d, f"conv_param_{i}")
            for i, (p, d) in enumerate(zip(given, defaults, strict=True), start=1)
        ]
        c, h, w = check_input_dim(input_dim)
        hidden_size = check_count(hidden_size, "hidden_size")
        output_size = check_count(output_size, "output_size")
        check_flag(check_labels, "check_labels")
        # The image side through the three blocks (each: two convolutions, a 2x2 pool).
        channels = [c]
        sides: tuple[int, ...] = (h, w)
        for i, conv in enumerate(convs, start=1):
            sides = tuple(conv_output_side(s, conv, f"DeepConvNet conv_param_{i}") for s in sides)
            channels.append(conv["filter_num"])
            if i % 2 == 0:
                if min(sides) < 2:
                    raise ValueError(
                        f"DeepConvNet: after conv_param_{i} the images are {sides[0]}x"
                        f"{sides[1]}, too small for a 2x2 pooling; use larger input_dim"
                    )
                sides = (sides[0] // 2, sides[1] // 2)
        flat = channels[-1] * sides[0] * sides[1]  # 64 * 4 * 4 for MNIST
        super().__init__(backend, seed)
        self.input_dim = (c, h, w)
        self.conv_params = convs
        self.hidden_size, self.output_size = hidden_size, output_size
        be, rng = self.backend, self.rng

        # initialize the weights: He's scale for every layer (ReLU follows each)
        self.params = {}
        for idx, conv in enumerate(convs, start=1):
            fs = conv["filter_size"]
            fan_in = channels[idx - 1] * fs * fs
            self.params[f"W{idx}"] = rng.normal(
                (conv["filter_num"], channels[idx - 1], fs, fs), scale=math.sqrt(2.0 / fan_in)
            )
            self.params[f"b{idx}"] = be.zeros(conv["filter_num"])
        self.params["W7"] = rng.normal((flat, hidden_size), scale=math.sqrt(2.0 / flat))
        self.params["b7"] = be.zeros(hidden_size)
        self.params["W8"] = rng.normal(
            (hidden_size, output_size), scale=math.sqrt(2.0 / hidden_size)
        )
        self.params["b8"] = be.zeros(output_size)

        # create the layers, in the book's order
        self.layers = OrderedDict()
        for idx, conv in enumerate(convs, start=1):
            self.layers[f"Conv{idx}"] = Convolution(
                self.params[f"W{idx}"],
                self.params[f"b{idx}"],
                conv["stride"],
                conv["pad"],
                input_grad=idx > 1,  # dL/d images is never needed
            )
            self.layers[f"Relu{idx}"] = Relu()
            if idx % 2 == 0:
                self.layers[f"Pool{idx // 2}"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W7"], self.params["b7"])
        self.layers["Relu7"] = Relu()
        self.layers["Dropout1"] = Dropout(
            0.5, generator=rng.generator, device_masks=dropout_device_masks
        )
        self.layers["Affine2"] = Affine(self.params["W8"], self.params["b8"])
        self.layers["Dropout2"] = Dropout(
            0.5, generator=rng.generator, device_masks=dropout_device_masks
        )
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)
        links = {f"Conv{i}": (f"W{i}", f"b{i}") for i in range(1, 7)}
        self.link({**links, "Affine1": ("W7", "b7"), "Affine2": ("W8", "b8")})

    def accuracy(self, x: Array, t: Array, *, batch_size: int = 100) -> float:
        """:meth:`Network.accuracy <xprop.nets.network.Network.accuracy>` in chunks of the
        book's ``batch_size=100``: a convolution's column matrix grows with the batch
        (thousands of test images at once would take gigabytes)."""
        return super().accuracy(x, t, batch_size=batch_size)

    def _checkpoint_config(self) -> dict[str, Any]:
        return {
            "input_dim": list(self.input_dim),
            "conv_params": self.conv_params,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
        }
