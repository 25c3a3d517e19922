"""The one network model: every network of the book is an ordered dict of layers.

The book writes each network the same way: ``params`` (a dict of weight arrays),
``layers`` (an ``OrderedDict`` of layers built around those arrays), a ``last_layer`` (the
loss), and the methods ``predict``, ``loss``, ``accuracy``, ``gradient`` (forward, then
backward through the layers in reverse, then collect each layer's ``dW``/``db``) and
``numerical_gradient``.  :class:`Network` writes those methods once; a network class only
builds its parameters and layers in ``__init__``, as the book's classes do::

    class TwoLayerNet(Network):
        def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01):
            super().__init__()
            self.params = {"W1": ..., "b1": ..., "W2": ..., "b2": ...}
            self.layers = OrderedDict()
            self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
            self.layers["Relu1"] = Relu()
            self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
            self.last_layer = SoftmaxWithLoss()

When ``__init__`` returns, the base finds, for each entry of ``params``, the layer
attribute that holds that very array (``params["W1"]`` is ``layers["Affine1"].W``): the
entry's *link*.  Before every forward pass the links are refreshed from ``params``, so
``params[key] = new_array`` (a checkpoint load, or JAX, whose immutable arrays make the
book's ``params[key] -= lr * grad`` rebind the entry) reaches the layer.  After ``backward``
the gradient of ``params[key]`` is the linked layer's ``d<attr>`` (``Affine1.dW``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import numbers
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from array_api_compat import device as device_of

from xprop._accuracy import accuracy
from xprop._namespace import dtype_name, namespace, require_array
from xprop.backend import Backend, get_backend
from xprop.checkpoint import Checkpointable
from xprop.gradient import numerical_gradient as _numerical_gradient
from xprop.nn.layer import Layer

__all__ = ["Network", "init_std"]

# Standard deviations of the initial weights by name: He for ReLU, Xavier for sigmoid.
_INIT_SCHEMES = {"relu": 2.0, "he": 2.0, "sigmoid": 1.0, "xavier": 1.0}


class Network(Checkpointable):
    """Base class of every network: the book's methods, written once.

    A subclass sets, in ``__init__``: ``params`` (dict of arrays), ``layers``
    (``OrderedDict`` of layers, forward order) and ``last_layer`` (the loss layer), after
    calling ``super().__init__(backend, seed)`` for :attr:`backend` and :attr:`rng`.  It may
    override :meth:`penalty` (a term added to the loss, e.g. weight decay) with
    :meth:`penalty_gradient`, and the checkpoint hooks of
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
    output_size : int, optional
        The number of classes, where the subclass sets it: compiled steps check integer
        labels against it before they run (they cannot raise inside).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def init_then_link(self: Network, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            self._link()  # idempotent: a subclass's __init__ links again after its own

        cls.__init__ = init_then_link  # type: ignore[method-assign]

    def __init__(self, backend: str | Backend | None = None, seed: int | None = None) -> None:
        self.backend = get_backend(backend)
        self.seed = seed
        #: The host generator of the initial weights (then of the Dropout masks): one seed
        #: gives bit-identical weights and the same masks on every backend.
        self.rng = self.backend.rng(seed)
        self.params: dict[str, Any] = {}
        self.layers: OrderedDict[str, Any] = OrderedDict()
        self.last_layer: Any = None
        self.last_loss: Any = None
        self._links: list[tuple[str, Any, str]] = []
        self._buffer_links: list[tuple[str, Any, str]] = []
        self._calls: list[tuple[Any, bool]] = []
        self._grad_names: list[tuple[str, Any, str]] = []

    # -- the book's API -------------------------------------------------------------------

    def predict(self, x: Any, train_flg: bool = False) -> Any:
        """Scores (logits) ``(N, C)`` for inputs ``x`` of shape ``(N, ...)``.

        ``train_flg`` selects training behaviour in the layers that have one (BatchNorm's
        batch statistics, Dropout's random masks); inference is the default.
        """
        params = self.params
        for key, layer, attr in self._links:
            setattr(layer, attr, params[key])
        for layer, takes_flag in self._calls:
            x = layer.forward(x, train_flg) if takes_flag else layer.forward(x)
        return x

    def loss(self, x: Any, t: Any, train_flg: bool = False) -> Any:
        """The loss on ``(x, t)`` as a 0-d array, plus :meth:`penalty`; no host sync.

        ``t``: integer labels ``(N,)`` or one-hot ``(N, C)``.
        """
        y = self.predict(x, train_flg)
        loss = self.last_layer.forward(y, t)
        penalty = self.penalty()
        if penalty is not None:
            # xp.asarray: NumPy turns 0-d sums into scalars; callers get a 0-d array.
            loss = namespace(loss).asarray(loss + penalty)
        self.last_loss = loss
        return loss

    def accuracy(self, x: Any, t: Any, *, batch_size: int = 10000) -> float:
        """Fraction of samples whose arg-max score is the label (a Python float).

        Inference mode.  ``t`` holds integer labels ``(N,)`` or one-hot labels ``(N, C)``,
        validated as :meth:`loss` validates them: shapes always, the range of integer
        labels when the loss layer checks labels (one more device read).  The data are
        scored in chunks of ``batch_size`` rows to bound memory; one device read at the end.

        Raises ``ValueError`` for an empty batch, labels of the wrong shape or width, or
        (checked) out of range; ``TypeError``/``ValueError`` for a ``batch_size`` that is
        not an integer of at least 1.
        """
        return accuracy(
            lambda xs: self.predict(xs, train_flg=False),
            x,
            t,
            check_labels=getattr(self.last_layer, "check_labels", True),
            batch_size=batch_size,
        )

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of ``loss(x, t, train_flg=True)`` by backpropagation.

        A dict with ``params``' keys and shapes.  As in the book, the forward pass is a
        training pass: it updates BatchNorm's running statistics and draws new Dropout
        masks.  The loss it computed is kept in :attr:`last_loss`.
        """
        return self.backprop(x, t)

    def backprop(self, x: Any, t: Any, dout: Any = 1) -> dict[str, Any]:
        """:meth:`gradient` with the upstream gradient of the loss ``dout`` (default 1).

        Every gradient comes out multiplied by ``dout``: a training step with plain SGD
        passes the learning rate and subtracts the result, one multiply per parameter
        fewer.
        """
        self.loss(x, t, train_flg=True)
        grad = self.last_layer.backward(dout)
        for layer in reversed(self.layers.values()):
            grad = layer.backward(grad)
        grads = {key: getattr(layer, grad) for key, layer, grad in self._grad_names}
        self.penalty_gradient(grads, dout)
        return grads

    def numerical_gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of ``loss(x, t, train_flg=True)`` by central differences (slow).

        Two losses per weight: use small networks, and float64 parameters to compare with
        :meth:`gradient`.  Unlike the book, the check leaves the network as it was:
        BatchNorm's running statistics are restored afterwards, and every Dropout layer
        keeps one mask for all the losses (see :meth:`fixed_dropout_masks`; call
        :meth:`gradient` inside the same block to compare the two).
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

    # -- training ---------------------------------------------------------------------------

    def compile_step(self, optimizer: Any) -> Any:
        """The fastest training step this network's library offers, with ``optimizer``.

        ``optimizer`` is an :mod:`xprop.optimizers` instance (``Adam(lr=0.001)``), or a
        learning rate, which means plain ``SGD(lr)``.  ``step = net.compile_step(Adam())``;
        then ``loss = step(x, t)`` does what ``grads = net.gradient(x, t);
        optimizer.update(net.params, grads)`` does, and ``losses = step.run(x_train,
        t_train, index_batches)`` runs one step per row of an integer array ``(k, B)`` of
        minibatch indices, in as few dispatches as the library allows.  ``step.kind`` says
        which path was taken (see :mod:`xprop.training.step`).

        A compiled program cannot raise on data: compiled steps check labels and index
        rows before they run (:func:`xprop.training.step.check_labels`), never inside.
        """
        from xprop.training.compile import compile_step

        return compile_step(self, optimizer)

    def train_step(self, x: Any, t: Any, lr: float) -> Any:
        """Former name of one plain-SGD step; use ``net.compile_step(lr)(x, t)``.

        Kept so that code written against xprop 0.1 runs; it is not the book's
        ``Trainer.train_step``.  Returns the loss (0-d array).
        """
        from xprop.training.step import eager_step, sgd

        return eager_step(self, sgd(lr), x, t)

    # -- hooks ------------------------------------------------------------------------------

    def penalty(self) -> Any:
        """A term added to the loss (``None``: none); :class:`MultiLayerNet`: weight decay."""
        return None

    def penalty_gradient(self, grads: dict[str, Any], dout: Any = 1) -> None:
        """Add the gradient of :meth:`penalty`, times ``dout``, into ``grads``."""

    # -- state besides params ---------------------------------------------------------------

    @contextlib.contextmanager
    def fixed_dropout_masks(self) -> Iterator[None]:
        """Within the block, each Dropout layer reuses one mask (drawn on first use)."""
        with contextlib.ExitStack() as stack:
            for layer in self.layers.values():
                if callable(getattr(layer, "fixed_mask", None)):
                    stack.enter_context(layer.fixed_mask())
            yield

    def running_stats(self) -> dict[str, Any]:
        """State that inference needs besides ``params``: BatchNorm's running statistics.

        ``{'running_mean1': ..., 'running_var1': ...}`` (the attribute's name, then the
        digits that end its layer's name); empty without such layers.  Kept outside
        ``params`` so that optimizers see only what they train.
        """
        return {key: getattr(layer, attr) for key, layer, attr in self._buffer_links}

    def set_running_stats(self, stats: dict[str, Any]) -> None:
        """Set the statistics of :meth:`running_stats` from a dict with the same keys.

        Each value must be an array of the library, device, shape and dtype of the one it
        replaces (``None`` lets the layer create it on its next forward pass; where the
        current value is ``None``, only the library and device are known).  Everything is
        checked before anything is set.

        Raises ``ValueError`` for other keys, another shape or another device;
        ``TypeError`` for a value that is not an array, of another library or dtype.
        """
        expected = {key for key, _, _ in self._buffer_links}
        if set(stats) != expected:
            raise ValueError(
                f"running statistics must have the keys {sorted(expected)}, got {sorted(stats)}"
            )
        for key, layer, attr in self._buffer_links:
            value = stats[key]
            if value is not None:
                self._check_running_stat(key, value, getattr(layer, attr))
        for key, layer, attr in self._buffer_links:
            setattr(layer, attr, stats[key])

    def _check_running_stat(self, key: str, value: Any, current: Any) -> None:
        """Raise unless ``value`` can replace ``current`` (see :meth:`set_running_stats`)."""
        like = current
        if like is None:  # not created yet: the parameters say library and device
            like = next(iter(self.params.values()), None)
            if like is None:
                return
        fix = "pass arrays like net.running_stats() returns, e.g. net.backend.asarray(...)"
        require_array(value, f"running statistic {key!r}")
        ours, theirs = _library(like), _library(value)
        if ours != theirs:
            raise TypeError(
                f"running statistic {key!r} is a {theirs} array but {type(self).__name__} "
                f"holds {ours} arrays; {fix}"
            )
        # The backend's device, not the current array's: JAX may have donated (deleted)
        # that one to a compiled step.  A JAX tracer inside jax.jit has no device.
        dev, want = device_of(value), self.backend.device
        if dev is not None and want is not None and dev != want:
            raise ValueError(
                f"running statistic {key!r} is on device {dev} but {type(self).__name__} is on "
                f"{want}; {fix}"
            )
        if current is None:
            return
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(
                f"running statistic {key!r} has shape {tuple(value.shape)} but the layer's has "
                f"shape {tuple(current.shape)} (one value per feature); {fix}"
            )
        if value.dtype != current.dtype:
            xp = namespace(value)
            raise TypeError(
                f"running statistic {key!r} has dtype {dtype_name(xp, value.dtype)} but the "
                f"layer's is {dtype_name(xp, current.dtype)}; {fix}"
            )

    def _checkpoint_buffers(self) -> dict[str, Any]:
        return self.running_stats()

    def _load_checkpoint_buffers(self, buffers: dict[str, Any]) -> None:
        self.set_running_stats(buffers)

    def replica(self) -> Network:
        """A copy of the network whose layers are copies: a forward pass on it changes
        nothing of this one.  ``params`` is shared until the copy's is replaced.

        What a compiled step traces: the arrays a forward pass keeps (JAX tracers, a CUDA
        graph's buffers) stay in the replica.  Its loss layer does not range-check labels.
        """
        twin = copy.copy(self)
        copies = {id(layer): copy.copy(layer) for layer in self.layers.values()}
        twin.layers = OrderedDict((n, copies[id(layer)]) for n, layer in self.layers.items())
        twin.last_layer = copy.copy(self.last_layer)
        if hasattr(twin.last_layer, "check_labels"):
            twin.last_layer.check_labels = False
        # The same links, to the copies (not found again: params may hold newer arrays).
        twin._links = [(k, copies[id(layer)], a) for k, layer, a in self._links]
        twin._buffer_links = [(k, copies[id(layer)], a) for k, layer, a in self._buffer_links]
        twin._calls = [(copies[id(layer)], flag) for layer, flag in self._calls]
        twin._grad_names = [(k, copies[id(layer)], g) for k, layer, g in self._grad_names]
        return twin

    # -- links between params and layers ----------------------------------------------------

    def _link(self) -> None:
        """Find the layer attribute that holds each entry of ``params`` (and each buffer)."""
        owner = {id(value): key for key, value in self.params.items()}
        links, used = [], set()
        for name, layer in self.layers.items():
            for attr in getattr(layer, "param_names", ()):
                value = getattr(layer, attr, None)
                if value is None:  # e.g. an Affine layer built without a bias
                    continue
                key = owner.get(id(value))
                if key is None or self.params[key] is not value:
                    raise TypeError(
                        f"{type(self).__name__}: layer {name!r} holds a parameter {attr!r} "
                        f"that is not an entry of params; build the layer around the array "
                        f"in params, e.g. Affine(self.params['W1'], self.params['b1'])"
                    )
                links.append((key, layer, attr))
                used.add(key)
        unused = [key for key in self.params if key not in used]
        if unused:
            raise TypeError(
                f"{type(self).__name__}: params {unused} belong to no layer; every entry of "
                "params must be the array a layer was built with"
            )
        self._links = links
        self._buffer_links = [
            (_buffer_key(name, attr), layer, attr)
            for name, layer in self.layers.items()
            for attr in getattr(layer, "buffer_names", ())
        ]
        self._calls = [
            (layer, bool(getattr(layer, "takes_train_flg", False)))
            for layer in self.layers.values()
        ]
        self._grad_names = [(key, layer, "d" + attr) for key, layer, attr in self._links]
        # The data enter at the first layer, which checks them; the layers after it are
        # fed by checked layers and skip their checks (the loss layer checks the labels).
        for i, layer in enumerate(self.layers.values()):
            if isinstance(layer, Layer):
                layer.checks = i == 0


def _library(x: Any) -> str:
    """The array library of ``x`` by its type's top-level module (``numpy``, ``torch``)."""
    name = type(x).__module__.split(".")[0]
    return "jax" if name == "jaxlib" else name


def _buffer_key(layer_name: str, attr: str) -> str:
    """``running_mean1`` for ``BatchNorm1.running_mean``; ``Norm.running_mean`` otherwise."""
    digits = layer_name[len(layer_name.rstrip("0123456789")) :]
    return f"{attr}{digits}" if digits else f"{layer_name}.{attr}"


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
