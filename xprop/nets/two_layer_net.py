"""The book's two-layer network (ch. 5.7): Affine - Relu - Affine - SoftmaxWithLoss."""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Any

from xprop._accuracy import accuracy
from xprop._namespace import check_count
from xprop.backend import Backend, get_backend
from xprop.checkpoint import Checkpointable
from xprop.gradient import numerical_gradient as _numerical_gradient
from xprop.nn.layers import Affine, Relu, SoftmaxWithLoss
from xprop.training.step import TrainStep, check_learning_rate

__all__ = ["PARAM_KEYS", "TwoLayerNet"]

#: The names of the network's parameters, in the book's order: the keys of ``params`` and
#: of the dicts ``gradient`` and ``numerical_gradient`` return.
PARAM_KEYS = ("W1", "b1", "W2", "b2")


class TwoLayerNet(Checkpointable):
    """A fully connected ``input - hidden (ReLU) - output (softmax)`` network.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        784, 50 and 10 for the book's MNIST network.  Any integer of at least 1, NumPy's
        included (``numbers.Integral``); not ``bool``, not a float such as ``5.0``.
    weight_init_std : float or {"he", "xavier"}
        Standard deviation of the normal initial weights (the book's 0.01), a finite
        positive number, or a scheme: ``"he"`` uses ``sqrt(2 / fan_in)`` (suits ReLU),
        ``"xavier"`` ``sqrt(1 / fan_in)``.  Biases start at zero.
    backend : str or Backend, optional
        Where the parameters live; default: the selected backend (:func:`xprop.get_backend`).
    seed : int, optional
        Seed of the host generator that draws the weights: the same seed gives bit-identical
        initial weights on every backend.
    check_labels : bool
        Range-check integer labels in :meth:`loss` and :meth:`accuracy` (one device read
        per call); see :class:`~xprop.nn.layers.SoftmaxWithLoss`.  Shapes are always checked.

    Raises
    ------
    TypeError
        A size that is not an integer, a ``weight_init_std`` that is neither a number nor
        a scheme name.
    ValueError
        A size below 1, a ``weight_init_std`` that is not finite and positive, an unknown
        scheme.

    Attributes
    ----------
    params : dict
        ``'W1'`` ``(input_size, hidden_size)``, ``'b1'`` ``(hidden_size,)``, ``'W2'``
        ``(hidden_size, output_size)``, ``'b2'`` ``(output_size,)``, in the backend's dtype.
        The layers read this dict at every call, so the book's update
        ``net.params[k] -= lr * grads[k]`` works on every backend, JAX's immutable arrays
        included.
    layers : OrderedDict
        ``'Affine1'``, ``'Relu1'``, ``'Affine2'``.
    last_layer : SoftmaxWithLoss
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
        input_size = check_count(input_size, "input_size")
        hidden_size = check_count(hidden_size, "hidden_size")
        output_size = check_count(output_size, "output_size")
        self.backend = get_backend(backend)
        rng = self.backend.rng(seed)
        std1 = _init_std(weight_init_std, input_size)
        std2 = _init_std(weight_init_std, hidden_size)
        self.params: dict[str, Any] = {
            "W1": rng.normal((input_size, hidden_size), scale=std1),
            "b1": self.backend.zeros(hidden_size),
            "W2": rng.normal((hidden_size, output_size), scale=std2),
            "b2": self.backend.zeros(output_size),
        }
        self.layers, self.last_layer = _build_layers(self.params, check_labels)

    def predict(self, x: Any) -> Any:
        """Scores (logits) of shape ``(N, output_size)`` for inputs ``x`` of shape ``(N, ...)``."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: Any, t: Any) -> Any:
        """Mean cross-entropy on ``(x, t)`` as a 0-d array (no host synchronisation)."""
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x: Any, t: Any, *, batch_size: int = 10000) -> float:
        """Fraction of samples whose arg-max score is the label (a Python float).

        ``t`` holds integer labels ``(N,)`` or one-hot labels ``(N, C)``, validated as
        :meth:`loss` validates them: shapes always, the range of integer labels when the
        network checks labels (``check_labels``, one more device read).  The data are
        scored in chunks of ``batch_size`` rows to bound memory; one device read at the end.

        Raises ``ValueError`` for an empty batch, labels of the wrong shape or width, or
        (checked) out of range; ``TypeError``/``ValueError`` for a ``batch_size`` that is
        not an integer of at least 1.
        """
        return accuracy(
            self.predict,
            x,
            t,
            self.params["W2"].shape[1],
            check_labels=self.last_layer.check_labels,
            batch_size=batch_size,
        )

    def numerical_gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of :meth:`loss` by central differences (slow: two losses per weight).

        Use float64 parameters to compare with :meth:`gradient` (see :mod:`xprop.gradient`).
        """
        grads = {}
        for key in PARAM_KEYS:
            original = self.params[key]

            def loss_at(w: Any, key: str = key) -> Any:
                self.params[key] = w
                return self.loss(x, t)

            try:
                grads[key] = _numerical_gradient(loss_at, original)
            finally:
                self.params[key] = original
        return grads

    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of :meth:`loss` by backpropagation: a dict with ``params``' keys/shapes."""
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}

    def train_step(self, x: Any, t: Any, lr: float) -> Any:
        """One SGD step, ``params[k] -= lr * grads[k]``, faster; returns the loss (0-d array).

        The learning rate enters as the upstream gradient of the loss (``dout = lr``), so
        backpropagation yields ``lr * grad`` directly, and the update is in place where the
        library allows it.  The loss (before the update) stays on the device: a loop need
        not wait for it.  For many steps, :meth:`compile_step` is faster still.

        Raises ``ValueError`` or ``TypeError`` unless ``lr`` is a finite positive Python
        number (a NaN learning rate would turn every weight into NaN); a host check, no
        device read.
        """
        lr = check_learning_rate(lr)
        return _sgd_step(self.layers, self.last_layer, self.params, x, t, lr)

    def pure_step(
        self, params: dict[str, Any], x: Any, t: Any, lr: float
    ) -> tuple[dict[str, Any], Any]:
        """:meth:`train_step` as a pure function: ``(new_params, loss)``, nothing changed.

        Builds its own layers around a copy of ``params`` (the network's layers and
        ``params`` are left alone), so it can be traced by a compiler such as ``jax.jit``
        without leaving tracers behind.  Labels are not range-checked (a compiled program
        cannot raise on data); the shapes are.
        """
        new = dict(params)
        layers, last_layer = _build_layers(new, check_labels=False)
        loss = _sgd_step(layers, last_layer, new, x, t, lr, in_place=False)
        return new, loss

    def compile_step(self, lr: float) -> TrainStep:
        """The fastest training step this network's library offers, for learning rate ``lr``.

        ``step = net.compile_step(0.1)``; then ``loss = step(x, t)`` does what
        ``net.train_step(x, t, 0.1)`` does, and ``losses = step.run(x_train, t_train,
        index_batches)`` runs one step per row of an integer array ``(k, B)`` of minibatch
        indices, ``k`` steps in as few dispatches as the library allows.  ``step.kind``
        says which path was taken:

        - JAX: ``"jax.jit"``, the step compiled with ``jax.jit`` (an epoch with
          ``lax.scan``); the parameter arrays are donated and ``params`` is rebound to the
          new ones after each call;
        - PyTorch on CUDA: ``"torch CUDA graph"``, captured once per batch shape and
          replayed, updating the parameter tensors in place;
        - NumPy, CuPy, array-api-strict and PyTorch on the CPU: ``"eager"``, which is
          ``train_step`` itself.

        Compiled paths do not range-check labels (it would read the device every step):
        validate the labels once before training, as :func:`xprop.load_mnist` does.

        Raises ``ValueError`` or ``TypeError`` unless ``lr`` is a finite positive number.
        """
        return self.backend.library.compile_step(self, check_learning_rate(lr))


def _build_layers(
    params: dict[str, Any], check_labels: bool
) -> tuple[OrderedDict[str, Any], SoftmaxWithLoss]:
    """The book's layers, reading their weights from ``params`` at every call."""
    layers: OrderedDict[str, Any] = OrderedDict()
    # The first layer's input gradient would be dL/d(images): nobody needs it.
    layers["Affine1"] = Affine.bound(params, "W1", "b1", input_grad=False)
    layers["Relu1"] = Relu()
    layers["Affine2"] = Affine.bound(params, "W2", "b2")
    return layers, SoftmaxWithLoss(check_labels=check_labels)


def _sgd_step(
    layers: OrderedDict[str, Any],
    last_layer: SoftmaxWithLoss,
    params: dict[str, Any],
    x: Any,
    t: Any,
    lr: float,
    *,
    in_place: bool = True,
) -> Any:
    """Forward, backward with ``dout = lr``, and ``params[k] -= lr * grad``; the loss."""
    for layer in layers.values():
        x = layer.forward(x)
    loss = last_layer.forward(x, t)
    dout = last_layer.backward(lr)
    for layer in reversed(layers.values()):
        dout = layer.backward(dout)
    a1, a2 = layers["Affine1"], layers["Affine2"]
    for key, step in (("W1", a1.dW), ("b1", a1.db), ("W2", a2.dW), ("b2", a2.db)):
        if in_place:
            params[key] -= step  # in place where arrays are mutable; JAX rebinds the entry
        else:
            params[key] = params[key] - step
    return loss


def _init_std(weight_init_std: float | str, fan_in: int) -> float:
    if isinstance(weight_init_std, str):
        scheme = weight_init_std.lower()
        if scheme == "he":
            return math.sqrt(2.0 / fan_in)
        if scheme == "xavier":
            return math.sqrt(1.0 / fan_in)
        raise ValueError(
            f"unknown weight_init_std {weight_init_std!r}; use a number, 'he' or 'xavier'"
        )
    if isinstance(weight_init_std, bool) or not isinstance(weight_init_std, numbers.Real):
        raise TypeError(
            f"weight_init_std must be a number (the book's 0.01) or 'he'/'xavier', got "
            f"{type(weight_init_std).__name__} {weight_init_std!r}"
        )
    std = float(weight_init_std)
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"weight_init_std must be finite and positive, got {std!r}")
    return std
