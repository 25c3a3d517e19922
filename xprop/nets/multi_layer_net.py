"""The book's fully connected multi-layer networks (ch. 6): ``MultiLayerNet`` and
``MultiLayerNetExtend`` (weight decay, Dropout and Batch Normalization).

Layers, in the book's order and with its names, for each hidden layer ``i``:
``Affine{i}`` - [``BatchNorm{i}``] - ``Activation_function{i}`` - [``Dropout{i}``], then
``Affine{n+1}`` and the softmax-with-loss output layer.  Every layer reads the ``params``
dict live, so any optimizer that updates that dict (in place, or by rebinding on JAX) trains
the network on every backend.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from xprop._accuracy import accuracy
from xprop._namespace import namespace
from xprop.backend import Backend, get_backend
from xprop.checkpoint import Checkpointable
from xprop.gradient import numerical_gradient as _numerical_gradient
from xprop.nn.batch_norm import BatchNormalization
from xprop.nn.dropout import Dropout
from xprop.nn.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["MultiLayerNet", "MultiLayerNetExtend"]

_ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}
_INIT_SCHEMES = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}


class MultiLayerNet(Checkpointable):
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
        Activation after each hidden Affine layer.
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
        self.input_size = sizes[0]
        self.hidden_size_list = list(sizes[1:-1])
        self.output_size = sizes[-1]
        self.hidden_layer_num = len(self.hidden_size_list)
        self.activation = activation.lower()
        self.weight_decay_lambda = float(weight_decay_lambda)
        self.use_dropout = bool(use_dropout)
        self.dropout_ratio = float(dropout_ratio)
        self.use_batchnorm = bool(use_batchnorm)
        self.backend = get_backend(backend)
        self.seed = seed
        self.last_loss: Any = None

        be = self.backend
        rng = be.rng(seed)
        self.params: dict[str, Any] = {}
        for idx in range(1, len(sizes)):
            std = _init_std(weight_init_std, sizes[idx - 1])
            self.params[f"W{idx}"] = rng.normal((sizes[idx - 1], sizes[idx]), scale=std)
            self.params[f"b{idx}"] = be.zeros(sizes[idx])

        self.layers: OrderedDict[str, Any] = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            # The first layer's input gradient would be dL/d(images): nobody needs it.
            self.layers[f"Affine{idx}"] = Affine.bound(
                self.params, f"W{idx}", f"b{idx}", input_grad=idx > 1
            )
            if self.use_batchnorm:
                units = self.hidden_size_list[idx - 1]
                self.params[f"gamma{idx}"] = be.xp.ones(units, dtype=be.dtype, device=be.device)
                self.params[f"beta{idx}"] = be.zeros(units)
                # Running statistics exist from the start (the book's zeros), so a checkpoint
                # of a fresh network already holds everything inference needs.
                self.layers[f"BatchNorm{idx}"] = BatchNormalization.bound(
                    self.params,
                    f"gamma{idx}",
                    f"beta{idx}",
                    running_mean=be.zeros(units),
                    running_var=be.zeros(units),
                )
            self.layers[f"Activation_function{idx}"] = activation_class()
            if self.use_dropout:
                # One host stream for the whole network, after the weights: seeded runs
                # draw the same masks on every backend.
                self.layers[f"Dropout{idx}"] = Dropout(
                    self.dropout_ratio, generator=rng.generator, device_masks=device_masks
                )
        last = self.hidden_layer_num + 1
        self.layers[f"Affine{last}"] = Affine.bound(
            self.params, f"W{last}", f"b{last}", input_grad=last > 1
        )
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)
        # Layers whose forward takes train_flg (the book tests the name for "Dropout" and
        # "BatchNorm"); found once here, not at every call.
        self._steps = [
            (layer, isinstance(layer, (Dropout, BatchNormalization)))
            for layer in self.layers.values()
        ]

    # -- the book's API -------------------------------------------------------------------

    def predict(self, x: Any, train_flg: bool = False) -> Any:
        """Scores (logits) ``(N, output_size)`` for ``x`` of shape ``(N, input_size)`` or
        ``(N, d1, ...)``.  ``train_flg`` selects BatchNorm's batch statistics and Dropout's
        random masks; inference (the default) uses running statistics and no masks."""
        for layer, takes_flag in self._steps:
            x = layer.forward(x, train_flg) if takes_flag else layer.forward(x)
        return x

    def loss(self, x: Any, t: Any, train_flg: bool = False) -> Any:
        """Mean cross-entropy plus ``0.5 * lambda * sum(W**2)``, as a 0-d array.

        ``t``: integer labels ``(N,)`` or one-hot ``(N, output_size)``.  No host sync.
        """
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        lam = self.weight_decay_lambda
        if lam:  # lambda = 0 adds exactly 0: skip the work
            xp = namespace(loss)
            weight_decay = 0.0
            for idx in range(1, self.hidden_layer_num + 2):
                W = self.params[f"W{idx}"]
                weight_decay = weight_decay + 0.5 * lam * xp.sum(W**2)
            # xp.asarray: NumPy turns 0-d sums into scalars; callers get a 0-d array.
            loss = xp.asarray(loss + weight_decay)
        self.last_loss = loss
        return loss

    def accuracy(self, x: Any, t: Any, *, batch_size: int = 10000) -> float:
        """Fraction of samples whose arg-max score is the label (a Python float).

        Inference mode (running statistics, no dropout); ``t`` holds integer labels ``(N,)``
        or one-hot labels ``(N, C)``, validated as :meth:`loss` validates them; scored in
        chunks of ``batch_size`` rows, one device read at the end (see
        :meth:`xprop.TwoLayerNet.accuracy` for what is raised).
        """
        last = self.hidden_layer_num + 1
        return accuracy(
            lambda xs: self.predict(xs, train_flg=False),
            x,
            t,
            self.params[f"W{last}"].shape[1],
            check_labels=self.last_layer.check_labels,
            batch_size=batch_size,
        )

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of ``loss(x, t, train_flg=True)`` by backpropagation.

        A dict with ``params``' keys and shapes: ``W{i}`` gets ``dW + lambda * W``,
        ``gamma{i}``/``beta{i}`` BatchNorm's ``dgamma``/``dbeta``.  As in the book, the
        forward pass is a training pass: it updates BatchNorm's running statistics and
        draws new Dropout masks.
        """
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        lam = self.weight_decay_lambda
        grads: dict[str, Any] = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.dW + lam * self.params[f"W{idx}"] if lam else affine.dW
            grads[f"b{idx}"] = affine.db
        if self.use_batchnorm:
            for idx in range(1, self.hidden_layer_num + 1):
                bn = self.layers[f"BatchNorm{idx}"]
                grads[f"gamma{idx}"] = bn.dgamma
                grads[f"beta{idx}"] = bn.dbeta
        return grads

    def numerical_gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of ``loss(x, t, train_flg=True)`` by central differences (slow).

        As the book does, the loss is that of a training pass (batch statistics).  Unlike
        the book, the check leaves the network as it was: BatchNorm's running statistics
        are restored afterwards, and every Dropout layer keeps one mask for all the losses
        (see :meth:`fixed_dropout_masks`; call :meth:`gradient` inside the same block to
        compare the two).  Use float64 parameters to compare with :meth:`gradient`.
        """
        saved = self.running_stats()
        grads = {}
        try:
            with self.fixed_dropout_masks():
                for key in self.params:
                    original = self.params[key]

                    def loss_at(w: Any, key: str = key) -> Any:
                        self.params[key] = w
                        return self.loss(x, t, train_flg=True)

                    try:
                        grads[key] = _numerical_gradient(loss_at, original)
                    finally:
                        self.params[key] = original
        finally:
            self.set_running_stats(saved)
        return grads

    # -- BatchNorm and Dropout state ----------------------------------------------------

    @contextlib.contextmanager
    def fixed_dropout_masks(self) -> Iterator[None]:
        """Within the block, each Dropout layer reuses one mask (drawn on first use)."""
        with contextlib.ExitStack() as stack:
            for layer in self.layers.values():
                if isinstance(layer, Dropout):
                    stack.enter_context(layer.fixed_mask())
            yield

    def running_stats(self) -> dict[str, Any]:
        """BatchNorm's running statistics: ``{'running_mean1': ..., 'running_var1': ...}``.

        They are what inference needs besides ``params``; they are kept outside ``params``
        so that optimizers see only what they train.  Empty without BatchNorm.
        """
        stats = {}
        for idx in range(1, self.hidden_layer_num + 1):
            bn = self.layers.get(f"BatchNorm{idx}")
            if bn is not None:
                stats[f"running_mean{idx}"] = bn.running_mean
                stats[f"running_var{idx}"] = bn.running_var
        return stats

    def set_running_stats(self, stats: dict[str, Any]) -> None:
        """Set BatchNorm's running statistics from a dict like :meth:`running_stats`'."""
        expected = set(self.running_stats())
        if set(stats) != expected:
            raise ValueError(
                f"running statistics must have the keys {sorted(expected)}, got {sorted(stats)}"
            )
        for idx in range(1, self.hidden_layer_num + 1):
            bn = self.layers.get(f"BatchNorm{idx}")
            if bn is not None:
                bn.running_mean = stats[f"running_mean{idx}"]
                bn.running_var = stats[f"running_var{idx}"]

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

    def _checkpoint_buffers(self) -> dict[str, Any]:
        return self.running_stats()

    def _load_checkpoint_buffers(self, buffers: dict[str, Any]) -> None:
        self.set_running_stats(buffers)


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
        (zeros) in ``params``; running statistics in :meth:`running_stats`.
    dropout_ratio : float, optional
        The correctly spelt alias of ``dropout_ration`` (give one of them).
    backend, seed, check_labels
        As for :class:`MultiLayerNet`.
    dropout_device_masks : bool
        Draw Dropout masks on the device (faster on GPUs; see :class:`~xprop.nn.dropout.Dropout`).
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
        dropout_device_masks: bool = False,
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
            dropout_ratio=_check_ratio(ratio),
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
    key = activation.lower() if isinstance(activation, str) else activation
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use 'relu' or 'sigmoid'")
    return _ACTIVATIONS[key]


def _init_std(weight_init_std: str | float, fan_in: int) -> float:
    if isinstance(weight_init_std, str):
        gain = _INIT_SCHEMES.get(weight_init_std.lower())
        if gain is None:
            raise ValueError(
                f"unknown weight_init_std {weight_init_std!r}; use a positive number, "
                "'relu'/'he' (sqrt(2/fan_in)) or 'sigmoid'/'xavier' (sqrt(1/fan_in))"
            )
        return math.sqrt(gain / fan_in)
    if (
        isinstance(weight_init_std, bool)
        or not isinstance(weight_init_std, numbers.Real)
        or not (math.isfinite(weight_init_std) and weight_init_std > 0)
    ):
        raise ValueError(f"weight_init_std must be a positive number, got {weight_init_std!r}")
    return float(weight_init_std)


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not (isinstance(ratio, numbers.Real) and 0 <= ratio < 1):
        raise ValueError(f"dropout_ratio must be a number in [0, 1), got {ratio!r}")
    return float(ratio)
