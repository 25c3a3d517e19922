"""The book's two-layer network (ch. 5.7): Affine - Relu - Affine - SoftmaxWithLoss."""

from __future__ import annotations

from collections import OrderedDict

from xprop.backend import Backend
from xprop.checks import check_count, check_flag
from xprop.nets.network import Network, init_std
from xprop.nn.layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["PARAM_KEYS", "TwoLayerNet"]

#: The names of the network's parameters, in the book's order: the keys of ``params`` and
#: of the dicts ``gradient`` and ``numerical_gradient`` return.
PARAM_KEYS = ("W1", "b1", "W2", "b2")


class TwoLayerNet(Network):
    """A fully connected ``input - hidden (ReLU) - output (softmax)`` network.

    ``predict``, ``loss``, ``accuracy``, ``gradient``, ``numerical_gradient`` and
    ``compile_step`` are :class:`~xprop.nets.network.Network`'s.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        784, 50 and 10 for the book's MNIST network: integers of at least 1.
    weight_init_std : float or {"he", "xavier"}
        Standard deviation of the normal initial weights (the book's 0.01), or a scheme
        (:func:`~xprop.nets.network.init_std`).  Biases start at zero.
    backend : str or Backend, optional
        Where the parameters live; default: the selected backend (:func:`xprop.get_backend`).
    seed : int, optional
        Seed of the host generator that draws the weights: the same seed gives bit-identical
        initial weights on every backend.
    check_labels : bool
        Range-check integer labels in :meth:`loss` and :meth:`accuracy` (one device read
        per call); see :class:`~xprop.nn.layers.SoftmaxWithLoss`.  Shapes are always checked.

    Attributes
    ----------
    params : dict
        ``'W1'`` ``(input_size, hidden_size)``, ``'b1'`` ``(hidden_size,)``, ``'W2'``
        ``(hidden_size, output_size)``, ``'b2'`` ``(output_size,)``, in the backend's dtype.
    layers : OrderedDict
        ``'Affine1'``, ``'Relu1'``, ``'Affine2'``.
    last_layer : SoftmaxWithLoss
    input_size, hidden_size, output_size : int
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float | str = 0.01,
        *,
        backend: str | Backend | None = None,
        seed: int | None = None,
        check_labels: bool = True,
    ) -> None:
        sizes = (
            check_count(input_size, "input_size"),
            check_count(hidden_size, "hidden_size"),
            check_count(output_size, "output_size"),
        )
        input_size, hidden_size, output_size = sizes
        check_flag(check_labels, "check_labels")
        super().__init__(backend, seed)
        self.input_size, self.hidden_size, self.output_size = sizes
        be, rng = self.backend, self.rng
        # initialize the weights
        self.params = {}
        self.params["W1"] = rng.normal(
            (input_size, hidden_size), scale=init_std(weight_init_std, input_size)
        )
        self.params["b1"] = be.zeros(hidden_size)
        self.params["W2"] = rng.normal(
            (hidden_size, output_size), scale=init_std(weight_init_std, hidden_size)
        )
        self.params["b2"] = be.zeros(output_size)

        # create the layers; the first one's input gradient (dL/d images) is never needed
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"], input_grad=False)
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)
        self.link({"Affine1": ("W1", "b1"), "Affine2": ("W2", "b2")})
