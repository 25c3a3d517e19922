"""The book's fully connected multi-layer networks (ch. 6): ``MultiLayerNet`` and
``MultiLayerNetExtend`` (weight decay, Dropout and Batch Normalization).

Layers, in the book's order and with its names, for each hidden layer ``i``:
``Affine{i}`` - [``BatchNorm{i}``] - ``Activation_function{i}`` - [``Dropout{i}``], then
``Affine{n+1}`` and the softmax-with-loss output layer.  ``predict``, ``loss``,
``accuracy``, ``gradient`` and the rest are :class:`~xprop.nets.network.Network`'s; these
classes build the layers and add weight decay.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from xprop._namespace import namespace
from xprop.backend import Backend
from xprop.checks import check_flag
from xprop.nets.network import Network, init_std
from xprop.nn.batch_norm import BatchNormalization, wide_dtype
from xprop.nn.dropout import Dropout, check_ratio
from xprop.nn.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from xprop.typing import Array

__all__ = ["MultiLayerNet", "MultiLayerNetExtend"]

_ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}


class MultiLayerNet(Network):
    """A fully connected network with any number of hidden layers and L2 weight decay.

    Parameters
    ----------
    input_size : int
        Features per sample (784 for MNIST; images ``(N, 1, 28, 28)`` are flattened).
    hidden_size_list : sequence of int
        Units of each hidden layer, e.g. ``[100, 100, 100]`` (may be empty).
    output_size : int
        Number of classes (10 for MNIST).
    activation : {"relu", "sigmoid"}
        Activation after each hidden Affine layer (one name, any case, for all of them;
        anything else than a string raises ``TypeError``).
    weight_init_std : {"relu", "he", "sigmoid", "xavier"} or float
        Standard deviation of the normal initial weights: ``"relu"``/``"he"`` gives
        ``sqrt(2 / fan_in)`` (He), ``"sigmoid"``/``"xavier"`` ``sqrt(1 / fan_in)``
        (Xavier), a number that number.  Biases start at zero.
    weight_decay_lambda : float
        L2 strength ``lambda >= 0``: the loss gains ``0.5 * lambda * sum(W**2)`` over every
        weight matrix (not the biases) and each weight's gradient ``lambda * W``.
    backend : str or Backend, optional
        Where the parameters live; default: the selected backend (:func:`xprop.get_backend`).
    seed : int, optional
        Seed of the host generator that draws the weights (then the Dropout masks): one seed
        gives bit-identical initial weights and the same masks on every backend.
    check_labels : bool
        Validate labels in the loss (one device read per call); see
        :class:`~xprop.nn.layers.SoftmaxWithLoss`.

    Attributes
    ----------
    params : dict
        ``'W1'`` ``(input_size, hidden_size_list[0])``, ``'b1'``, ..., ``'W{n+1}'``,
        ``'b{n+1}'`` (``n`` hidden layers), in the backend's dtype.
    layers : OrderedDict
        The book's layer names: ``'Affine1'``, ``'Activation_function1'``, ...
    last_layer : SoftmaxWithLoss
    last_loss : array or None
        The 0-d loss of the last :meth:`loss` call (also made by :meth:`gradient`), left on
        the device.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        *,
        backend: str | Backend | None = None,
        seed: int | None = None,
        check_labels: bool = True,
    ) -> None:
        self._build(
            input_size,
            hidden_size_list,
            output_size,
            activation,
            weight_init_std,
            weight_decay_lambda,
            use_dropout=False,
            dropout_ratio=0.5,
            use_batchnorm=False,
            backend=backend,
            seed=seed,
            check_labels=check_labels,
            device_masks=False,
        )

    def _build(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str,
        weight_init_std: str | float,
        weight_decay_lambda: float,
        *,
        use_dropout: bool,
        dropout_ratio: float,
        use_batchnorm: bool,
        backend: str | Backend | None,
        seed: int | None,
        check_labels: bool,
        device_masks: bool,
    ) -> None:
        sizes = _check_sizes(input_size, hidden_size_list, output_size)
        activation_class = _activation(activation)
        if isinstance(weight_decay_lambda, bool) or not (
            isinstance(weight_decay_lambda, numbers.Real)
            and math.isfinite(weight_decay_lambda)
            and weight_decay_lambda >= 0
        ):
            raise ValueError(
                f"weight_decay_lambda must be a finite number >= 0, got {weight_decay_lambda!r}"
            )
        check_flag(check_labels, "check_labels")
        super().__init__(backend, seed)
        self.input_size: int = sizes[0]
        self.hidden_size_list: list[int] = list(sizes[1:-1])
        self.output_size: int = sizes[-1]
        self.hidden_layer_num: int = len(self.hidden_size_list)
        self.activation: str = activation.lower()
        self.weight_decay_lambda: float = float(weight_decay_lambda)
        self.use_dropout: bool = bool(use_dropout)
        self.dropout_ratio: float = float(dropout_ratio)
        self.use_batchnorm: bool = bool(use_batchnorm)

        # initialize the weights
        be, rng = self.backend, self.rng
        self.params = {}
        for idx in range(1, len(sizes)):
            std = init_std(weight_init_std, sizes[idx - 1])
            self.params[f"W{idx}"] = rng.normal((sizes[idx - 1], sizes[idx]), scale=std)
            self.params[f"b{idx}"] = be.zeros(sizes[idx])

        # create the layers
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            # The first layer's input gradient would be dL/d(images): nobody needs it.
            self.layers[f"Affine{idx}"] = Affine(
                self.params[f"W{idx}"], self.params[f"b{idx}"], input_grad=idx > 1
            )
            if self.use_batchnorm:
                units = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = be.xp.ones(units, dtype=be.dtype, device=be.device)
                self.params[f"beta{idx}"] = be.zeros(units)
                # Running statistics exist from the start (the book's zeros), so a checkpoint
                # of a fresh network already holds everything inference needs.
                # float16 networks keep them in float32 (float16 overflows at 65504).
                stats = wide_dtype(be.xp, be.dtype)
                stats = be.dtype if stats is None else stats
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(
                    self.params[f"gamma{idx}"],
                    self.params[f"beta{idx}"],
                    running_mean=be.xp.zeros(units, dtype=stats, device=be.device),
                    running_var=be.xp.zeros(units, dtype=stats, device=be.device),
                )
            self.layers[f"Activation_function{idx}"] = activation_class()
            if self.use_dropout:
                # One host stream for the whole network, after the weights: seeded runs
                # draw the same masks on every backend.
                self.layers[f"Dropout{idx}"] = Dropout(
                    self.dropout_ratio, generator=rng.generator, device_masks=device_masks
                )
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine(
            self.params[f"W{last}"], self.params[f"b{last}"], input_grad=last > 1
        )
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)
        links = {f"Affine{i}": (f"W{i}", f"b{i}") for i in range(1, last + 1)}
        if self.use_batchnorm:
            links |= {f"BatchNorm{i}": (f"gamma{i}", f"beta{i}") for i in range(1, last)}
        self.link(links)

    # -- weight decay ---------------------------------------------------------------------

    def penalty(self) -> Array | None:
        """``0.5 * lambda * sum(W**2)`` over every weight matrix (not the biases), or None."""
        lam = self.weight_decay_lambda
        if not lam:  # lambda = 0 adds exactly 0: skip the work
            return None
        weight_decay = 0.0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params[f"W{idx}"]
            weight_decay = weight_decay + 0.5 * lam * namespace(W).sum(W**2)
        return weight_decay

    def penalty_gradient(self, grads: dict[str, Array], dout: float | Array = 1) -> None:
        """Each weight's gradient gains ``lambda * W`` (times ``dout``)."""
        lam = self.weight_decay_lambda
        if not lam:
            return
        scale = lam if isinstance(dout, int) and dout == 1 else lam * dout
        for idx in range(1, self.hidden_layer_num + 2):
            grads[f"W{idx}"] = grads[f"W{idx}"] + scale * self.params[f"W{idx}"]

    # -- checkpoints (see xprop.checkpoint) ------------------------------------------------

    def _checkpoint_config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size_list": self.hidden_size_list,
            "output_size": self.output_size,
            "activation": self.activation,
            "use_dropout": self.use_dropout,
            "dropout_ratio": self.dropout_ratio if self.use_dropout else None,
            "use_batchnorm": self.use_batchnorm,
        }

    def _checkpoint_info(self) -> dict[str, Any]:
        return {"weight_decay_lambda": self.weight_decay_lambda, "seed": self.seed}


class MultiLayerNetExtend(MultiLayerNet):
    """:class:`MultiLayerNet` with the book's extensions: Dropout and Batch Normalization.

    Parameters
    ----------
    input_size, hidden_size_list, output_size, activation, weight_init_std, \
weight_decay_lambda
        As for :class:`MultiLayerNet`.
    use_dropout : bool
        A :class:`~xprop.nn.dropout.Dropout` layer after each hidden activation.
    dropout_ration : float
        The book's (misspelt) name of the dropout ratio, default 0.5.
    use_batchnorm : bool
        A :class:`~xprop.nn.batch_norm.BatchNormalization` layer between each hidden Affine
        layer and its activation, with parameters ``gamma{i}`` (ones) and ``beta{i}``
        (zeros) in ``params``; running statistics in :meth:`running_stats` (zeros in the
        backend's dtype, float32 for a float16 network: see BatchNormalization).
    dropout_ratio : float, optional
        The correctly spelt alias of ``dropout_ration`` (give one of them).
    backend, seed, check_labels
        As for :class:`MultiLayerNet`.
    dropout_device_masks : bool
        Draw Dropout masks on the device (default; see :class:`~xprop.nn.dropout.Dropout`):
        the masks every training path draws, eager or compiled, on every backend, so one
        seed gives one run everywhere.  ``False`` draws them on the host as the book does
        (``uniform > ratio``) in the eager step; a compiled step (JAX, CUDA graphs) still
        draws device masks, so its run then differs from the eager one.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: str | float = "relu",
        weight_decay_lambda: float = 0,
        use_dropout: bool = False,
        dropout_ration: float | None = None,
        use_batchnorm: bool = False,
        *,
        dropout_ratio: float | None = None,
        backend: str | Backend | None = None,
        seed: int | None = None,
        check_labels: bool = True,
        dropout_device_masks: bool = True,
    ) -> None:
        both = dropout_ration is not None and dropout_ratio is not None
        if both and dropout_ration != dropout_ratio:
            raise ValueError(
                f"dropout_ration={dropout_ration!r} and dropout_ratio={dropout_ratio!r} "
                "disagree; they are the same setting (the book's spelling and the correct "
                "one): pass only one"
            )
        ratio = next((r for r in (dropout_ratio, dropout_ration) if r is not None), 0.5)
        self._build(
            input_size,
            hidden_size_list,
            output_size,
            activation,
            weight_init_std,
            weight_decay_lambda,
            use_dropout=use_dropout,
            dropout_ratio=check_ratio(ratio),
            use_batchnorm=use_batchnorm,
            backend=backend,
            seed=seed,
            check_labels=check_labels,
            device_masks=dropout_device_masks,
        )

    @property
    def dropout_ration(self) -> float:
        """The book's spelling of :attr:`dropout_ratio`."""
        return self.dropout_ratio


def _check_sizes(input_size: int, hidden_size_list: Sequence[int], output_size: int) -> list[int]:
    if isinstance(hidden_size_list, (str, bytes)) or not isinstance(hidden_size_list, Sequence):
        raise TypeError(
            f"hidden_size_list must be a list of positive integers such as [100, 100], got "
            f"{hidden_size_list!r}"
        )
    named = [("input_size", input_size)]
    named += [(f"hidden_size_list[{i}]", s) for i, s in enumerate(hidden_size_list)]
    named.append(("output_size", output_size))
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return [int(v) for _, v in named]


def _activation(activation: str) -> type:
    """The layer class of an activation name; one name for every hidden layer."""
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a string, 'relu' or 'sigmoid' (one for every hidden layer), "
            f"got {type(activation).__name__} {activation!r}"
        )
    key = activation.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use 'relu' or 'sigmoid'")
    return _ACTIVATIONS[key]
