"""The one network model: every network of the book is an ordered dict of layers.

The book writes each network the same way: ``params`` (a dict of weight arrays),
``layers`` (an ``OrderedDict`` of layers built around those arrays), a ``last_layer`` (the
loss), and the methods ``predict``, ``loss``, ``accuracy``, ``gradient`` (forward, then
backward through the layers in reverse, then collect each layer's ``dW``/``db``) and
``numerical_gradient``.  :class:`Network` writes those methods once; a network class only
builds its parameters and layers in ``__init__``, as the book's classes do, and ends it by
saying which layer holds which parameters::

    class TwoLayerNet(Network):
        def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01):
            super().__init__()
            self.input_size = input_size  # what predict() checks the data against
            self.params = {"W1": ..., "b1": ..., "W2": ..., "b2": ...}
            self.layers = OrderedDict()
            self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
            self.layers["Relu1"] = Relu()
            self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
            self.last_layer = SoftmaxWithLoss()
            self.link({"Affine1": ("W1", "b1"), "Affine2": ("W2", "b2")})

``params`` is the truth: ``predict`` hands each layer the current array of each of its
parameters, so ``params[key] = new_array`` (a checkpoint load, or JAX, whose immutable
arrays make the book's ``params[key] -= lr * grad`` rebind the entry) reaches the layer,
and ``gradient`` collects the gradient of ``params[key]`` from the same layer (``dW``).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from xprop._accuracy import accuracy
from xprop._namespace import namespace
from xprop.backend import Backend, get_backend
from xprop.checkpoint import Checkpointable
from xprop.checks import check_batch, check_flag, check_params, check_replacements
from xprop.gradient import numerical_gradient as _numerical_gradient
from xprop.nn.layer import Layer
from xprop.optimizers import Optimizer
from xprop.typing import Array, Namespace

if TYPE_CHECKING:  # nets import training only where a step is compiled
    from xprop.training.step import TrainStep

__all__ = ["Network", "init_std"]

# Standard deviations of the initial weights by name: He for ReLU, Xavier for sigmoid.
_INIT_SCHEMES = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}


class Network(Checkpointable):
    """Base class of every network: the book's methods, written once.

    A subclass's ``__init__`` calls ``super().__init__(backend, seed)`` (for
    :attr:`backend` and :attr:`rng`), sets ``params`` (dict of arrays), ``layers``
    (``OrderedDict`` of layers, forward order) and ``last_layer`` (the loss layer), and
    ends with :meth:`link`.  It may set ``input_size`` (features per sample) or
    ``input_dim`` (the shape of one sample, ``(C, H, W)``): :meth:`predict` then checks
    the data against it.  It may override :meth:`penalty` (a term added to the loss, e.g.
    weight decay) with :meth:`penalty_gradient`, and the checkpoint hooks of
    :class:`~xprop.checkpoint.Checkpointable`.

    Attributes
    ----------
    backend : Backend
        Where the parameters live.
    params : dict
        The parameters by name (``"W1"``, ``"b1"``, ...).
    layers : OrderedDict
        The layers by name, in forward order.
    last_layer : layer
        The loss layer (``SoftmaxWithLoss``).
    last_loss : array or None
        The 0-d loss of the last :meth:`loss` call (also made by :meth:`gradient`), left on
        the device.
    param_layers, buffer_layers : dict
        ``{key: (layer name, attribute)}``: where :meth:`link` found each entry of
        ``params`` and each running statistic (``"running_mean1": ("BatchNorm1",
        "running_mean")``).
    """

    def __init__(self, backend: str | Backend | None = None, seed: int | None = None) -> None:
        self.backend = get_backend(backend)
        self.seed = seed
        #: The host generator of the initial weights (then of the Dropout masks): one seed
        #: gives bit-identical weights and the same masks on every backend.
        self.rng = self.backend.rng(seed)
        self.params: dict[str, Array] = {}
        self.layers: OrderedDict[str, Any] = OrderedDict()
        self.last_layer: Any = None
        self.last_loss: Array = None
        self.param_layers: dict[str, tuple[str, str]] = {}
        self.buffer_layers: dict[str, tuple[str, str]] = {}
        # What check_input compares with: (key, owner, features, dim, built) once linked.
        self._door: Any = None

    def link(self, layer_params: Mapping[str, Sequence[str | None]] | None = None) -> None:
        """Say which layer holds which parameters: the end of every network's ``__init__``.

        ``layer_params`` maps a layer's name to the keys of its parameters in the order of
        its ``param_names`` (``None`` for one it lacks): ``{"Affine1": ("W1", "b1")}`` says
        ``layers["Affine1"].W is params["W1"]`` and ``.b is params["b1"]``.  ``None`` (a
        network that does not call ``link``, which then happens on first use) links each
        entry to the layer attribute that holds that very array.  The running statistics
        (``buffer_names``) are named too (:func:`buffer_key`), and the layers stop checking
        their inputs: :meth:`predict` checks the data where they enter.

        Raises ``TypeError`` when ``super().__init__`` was not called, a named layer or key
        does not exist, a layer does not hold the array named, or an entry of ``params``
        belongs to no layer (or a layer's parameter to no entry).
        """
        table = _holders(self) if layer_params is None else layer_params
        self.param_layers, self.buffer_layers, self._door = _tables(self, table)

    # -- the book's API -------------------------------------------------------------------

    def predict(self, x: Array, train_flg: bool = False) -> Array:
        """Scores (logits) ``(N, C)`` for inputs ``x`` of shape ``(N, ...)``.

        ``train_flg`` (``True`` or ``False``) selects training behaviour in the layers that
        have one (BatchNorm's batch statistics, Dropout's random masks); inference is the
        default.  ``x`` is checked here, once (:meth:`check_input`).
        """
        check_flag(train_flg, "train_flg")  # "False" must not train
        self.check_input(x)
        layers = self.layers
        for key, (name, attr) in self.param_layers.items():  # params is the truth
            setattr(layers[name], attr, self.params[key])
        for layer in layers.values():
            flag = getattr(layer, "takes_train_flg", False)
            x = layer.forward(x, train_flg) if flag else layer.forward(x)
        return x

    def loss(self, x: Array, t: Array, train_flg: bool = False) -> Array:
        """The loss on ``(x, t)`` as a 0-d array, plus :meth:`penalty`; no host sync.

        ``t``: integer labels ``(N,)`` or one-hot ``(N, C)``, checked by the loss layer.
        """
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        penalty = self.penalty()
        if penalty is not None:
            # xp.asarray: NumPy turns 0-d sums into scalars; callers get a 0-d array.
            loss = namespace(loss).asarray(loss + penalty)
        self.last_loss = loss
        return loss

    def accuracy(self, x: Array, t: Array, *, batch_size: int = 10000) -> float:
        """Fraction of samples whose arg-max score is the label (a Python float).

        Inference mode.  ``t`` holds integer labels ``(N,)`` or one-hot labels ``(N, C)``,
        validated as :meth:`loss` validates them (the range of integer labels when the loss
        layer checks labels: one more device read).  The data are scored in chunks of
        ``batch_size`` rows to bound memory; one device read at the end.

        Raises ``ValueError`` for an empty batch, labels of the wrong shape or width, or
        (checked) out of range; ``TypeError``/``ValueError`` for a ``batch_size`` that is
        not an integer of at least 1.
        """
        checked = getattr(self.last_layer, "check_labels", True)
        return accuracy(self.predict, x, t, check_labels=checked, batch_size=batch_size)

    def gradient(self, x: Array, t: Array) -> dict[str, Array]:
        """Gradients of ``loss(x, t, train_flg=True)`` by backpropagation.

        A dict with ``params``' keys and shapes.  As in the book, the forward pass is a
        training pass: it updates BatchNorm's running statistics and draws new Dropout
        masks.  The loss it computed is kept in :attr:`last_loss`.
        """
        return self.scaled_gradient(x, t, 1)

    def scaled_gradient(self, x: Array, t: Array, scale: float | Array) -> dict[str, Array]:
        """:meth:`gradient` of ``scale * loss``: ``scale`` is the upstream gradient of the
        loss (the book's ``dout = 1``), and every gradient comes out multiplied by it; a
        plain-SGD step passes its learning rate (:func:`xprop.training.step.loop_body`)."""
        # forward
        self.loss(x, t, train_flg=True)
        # backward
        dout = self.last_layer.backward(scale)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        layers = self.layers
        grads = {key: getattr(layers[n], "d" + a) for key, (n, a) in self.param_layers.items()}
        self.penalty_gradient(grads, scale)
        return grads

    def numerical_gradient(self, x: Array, t: Array) -> dict[str, Array]:
        """Gradients of ``loss(x, t, train_flg=True)`` by central differences (slow).

        Two losses per weight: use small networks, and float64 parameters to compare with
        :meth:`gradient`.  Unlike the book, the check leaves the network as it was:
        BatchNorm's running statistics are restored afterwards, and every Dropout layer
        keeps one mask for all the losses (see :meth:`fixed_dropout_masks`; call
        :meth:`gradient` inside the same block to compare the two).
        """
        saved, grads = self.running_stats(), {}
        try:
            with self.fixed_dropout_masks():
                for key, original in list(self.params.items()):

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

    def compile_step(self, optimizer: Optimizer | float) -> TrainStep:
        """The fastest training step this network's library offers, with ``optimizer``.

        ``optimizer`` is an :mod:`xprop.optimizers` instance (``Adam(lr=0.001)``), or a
        learning rate, which means plain ``SGD(lr)``.  ``loss = step(x, t)`` does what
        ``grads = net.gradient(x, t); optimizer.update(net.params, grads)`` does, and
        ``step.run(x, t, index_rows)`` one step per row of minibatch indices ``(k, B)``
        (see :mod:`xprop.training.step`).
        """
        from xprop.training.compile import compile_step

        return compile_step(self, optimizer)

    # -- what a subclass may add: a penalty (weight decay), the data it was built for --------

    def penalty(self) -> Array | None:
        """A term added to the loss (``None``: none); :class:`MultiLayerNet`: weight decay."""
        return None

    def penalty_gradient(self, grads: dict[str, Array], dout: float | Array = 1) -> None:
        """Add the gradient of :meth:`penalty`, times ``dout``, into ``grads``."""

    def check_input(self, x: Array) -> Namespace:
        """The door: ``x`` is a batch this network was built for (the library, device and
        dtype of its parameters; ``input_size`` features or ``input_dim`` images), and each
        parameter still has the shape and dtype it was built with; ``x``'s namespace.  See
        :func:`xprop.checks.check_batch`."""
        if getattr(self, "_door", None) is None:  # a network that did not call link()
            self.link()
        key, owner, features, dim, built = self._door
        if key is None:  # no parameters to compare with: the layers check
            return namespace(x)
        who, like = type(self).__name__, self.params[key]
        check_params(self.params, built, who)
        return check_batch(x, like, who, owner, features=features, sample_shape=dim)

    # -- state besides params: BatchNorm's statistics, Dropout's masks ----------------------

    def running_stats(self) -> dict[str, Array]:
        """What inference needs besides ``params``: BatchNorm's running statistics, by
        :func:`buffer_key` (``{'running_mean1': ..., 'running_var1': ...}``)."""
        if getattr(self, "_door", None) is None:  # a network that did not call link()
            self.link()
        layers = self.layers
        return {key: getattr(layers[n], a) for key, (n, a) in self.buffer_layers.items()}

    def set_running_stats(self, stats: dict[str, Array]) -> None:
        """Set the statistics of :meth:`running_stats` from a dict with the same keys, each
        checked first (:func:`xprop.checks.check_replacements`: library, device, shape and
        dtype of the value it replaces); ``None`` lets a layer make it again."""
        current = self.running_stats()
        like = next(iter(self.params.values()), None)
        check_replacements(current, stats, like, self.backend.device, type(self).__name__)
        for key, (name, attr) in self.buffer_layers.items():
            setattr(self.layers[name], attr, stats[key])

    @contextlib.contextmanager
    def fixed_dropout_masks(self) -> Iterator[None]:
        """Within the block, each Dropout layer reuses one mask (drawn on first use)."""
        with contextlib.ExitStack() as stack:
            for layer in self.layers.values():
                if callable(getattr(layer, "fixed_mask", None)):
                    stack.enter_context(layer.fixed_mask())
            yield


def buffer_key(layer_name: str, attr: str) -> str:
    """The key of a layer's running statistic: the book's ``running_mean1`` for
    ``BatchNorm1.running_mean``, ``enc_bn1.running_mean`` for any other layer name (so two
    layers never share a key)."""
    number = layer_name.removeprefix("BatchNorm")
    if number != layer_name and number.isdigit():
        return f"{attr}{number}"
    return f"{layer_name}.{attr}"


def _check_init(net: Network) -> None:
    if "backend" not in vars(net):
        raise TypeError(
            f"{type(net).__name__}.__init__ must call super().__init__(backend, seed) first: "
            "it gives the network its backend, rng and params"
        )


def _holders(net: Network) -> dict[str, list[str | None]]:
    """``link``'s table for a network that gave none: the key of the very array each layer
    parameter holds (``None`` where it is no entry of ``params``)."""
    _check_init(net)
    owner = {id(value): key for key, value in net.params.items()}
    return {
        name: [owner.get(id(getattr(layer, attr, None))) for attr in layer.param_names]
        for name, layer in net.layers.items()
        if getattr(layer, "param_names", ())
    }


def _tables(net: Network, table: Mapping[str, Sequence[str | None]]) -> tuple[Any, Any, Any]:
    """``link``'s work: ``param_layers`` and ``buffer_layers`` from ``table``, every pair
    verified; the door (:meth:`Network.check_input`); the layers' own checks off."""
    cls, links = type(net).__name__, {}
    _check_init(net)
    for name, layer in net.layers.items():
        keys = list(table.get(name, ()))
        for attr in getattr(layer, "param_names", ()):
            key = keys.pop(0) if keys else None
            value = getattr(layer, attr, None)
            if key is None and value is None:  # e.g. an Affine layer without a bias
                continue
            if key not in net.params or net.params[key] is not value:
                which = "no entry of params" if key is None else f"not params[{key!r}]"
                raise TypeError(
                    f"{cls}: layer {name!r} holds a parameter {attr!r} that is {which}; build "
                    "the layer around the array in params, e.g. Affine(self.params['W1'], "
                    "self.params['b1']), and name it in link()"
                )
            links[key] = (name, attr)
    unknown = sorted(set(table) - set(net.layers))
    unused = [key for key in net.params if key not in links]
    if unknown or unused:
        raise TypeError(
            f"{cls}: link() names layers {unknown} that do not exist"
            if unknown
            else f"{cls}: params {unused} belong to no layer; every entry of params must be "
            "the array a layer was built with, named in link()"
        )
    buffers = {
        buffer_key(name, attr): (name, attr)
        for name, layer in net.layers.items()
        for attr in getattr(layer, "buffer_names", ())
    }
    features, dim = getattr(net, "input_size", None), getattr(net, "input_dim", None)
    first = next(iter(net.params), None)  # its library, device and dtype are the network's
    owner = None if first is None else f"the layer's {links[first][1]}"
    built = {key: (value.shape, value.dtype) for key, value in net.params.items()}
    door = (first, owner, features, None if dim is None else tuple(dim), built)
    for i, layer in enumerate(net.layers.values()):
        if isinstance(layer, Layer):  # the data are checked once, at the door
            layer.checks = i == 0 and features is None and dim is None
    return {key: links[key] for key in net.params}, buffers, door


def init_std(weight_init_std: float | str, fan_in: int) -> float:
    """The standard deviation of initial weights with ``fan_in`` inputs per unit.

    ``weight_init_std`` is a finite positive number (the book's 0.01), or a scheme:
    ``"he"``/``"relu"`` gives ``sqrt(2 / fan_in)`` (suits ReLU), ``"xavier"``/``"sigmoid"``
    ``sqrt(1 / fan_in)`` (suits sigmoid).

    Raises ``TypeError`` for anything else than a number or a string, ``ValueError`` for
    an unknown scheme or a number that is not finite and positive.
    """
    if isinstance(weight_init_std, str):
        gain = _INIT_SCHEMES.get(weight_init_std.lower())
        if gain is None:
            raise ValueError(
                f"unknown weight_init_std {weight_init_std!r}; use a positive number, "
                "'relu'/'he' (sqrt(2/fan_in)) or 'sigmoid'/'xavier' (sqrt(1/fan_in))"
            )
        return math.sqrt(gain / fan_in)
    if isinstance(weight_init_std, bool) or not isinstance(weight_init_std, numbers.Real):
        raise TypeError(
            f"weight_init_std must be a number (the book's 0.01) or a scheme such as 'he', "
            f"got {type(weight_init_std).__name__} {weight_init_std!r}"
        )
    std = float(weight_init_std)
    if not (math.isfinite(std) and std > 0):
        raise ValueError(
            f"weight_init_std must be a positive number, got {weight_init_std!r}; a "
            f"standard deviation is finite and positive, got {weight_init_std!r}: use e.g. "
            "0.01, or a scheme such as 'he'"
        )
    return std
