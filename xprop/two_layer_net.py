"""The book's two-layer network (ch. 5.7): Affine - Relu - Affine - SoftmaxWithLoss."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from xprop._namespace import namespace
from xprop.backend import Backend, get_backend
from xprop.checkpoint import Checkpointable
from xprop.gradient import numerical_gradient as _numerical_gradient
from xprop.layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["TwoLayerNet"]

PARAM_KEYS = ("W1", "b1", "W2", "b2")


class TwoLayerNet(Checkpointable):
    """A fully connected ``input - hidden (ReLU) - output (softmax)`` network.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        784, 50 and 10 for the book's MNIST network.
    weight_init_std : float or {"he", "xavier"}
        Standard deviation of the normal initial weights (the book's 0.01), or a scheme:
        ``"he"`` uses ``sqrt(2 / fan_in)`` (suits ReLU), ``"xavier"`` ``sqrt(1 / fan_in)``.
        Biases start at zero.
    backend : str or Backend, optional
        Where the parameters live; default: the selected backend (:func:`xprop.get_backend`).
    seed : int, optional
        Seed of the host generator that draws the weights: the same seed gives bit-identical
        initial weights on every backend.
    check_labels : bool
        Validate labels in the loss (one device read per call); see
        :class:`~xprop.layers.SoftmaxWithLoss`.

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
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("output_size", output_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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
        self.layers: OrderedDict[str, Any] = OrderedDict()
        # The first layer's input gradient would be dL/d(images): nobody needs it.
        self.layers["Affine1"] = Affine.bound(self.params, "W1", "b1", input_grad=False)
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine.bound(self.params, "W2", "b2")
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)

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

        ``t`` holds integer labels ``(N,)`` or one-hot labels ``(N, C)``.  The data are
        scored in chunks of ``batch_size`` rows to bound memory; one device read at the end.
        """
        xp = namespace(x, t)
        n = x.shape[0]
        if n == 0:
            raise ValueError("accuracy of an empty batch is undefined; pass at least one sample")
        if t.shape[0] != n:
            raise ValueError(f"{n} samples but {t.shape[0]} labels; they must match")
        labels = xp.argmax(t, axis=1) if t.ndim == 2 else t
        correct = None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            y = xp.argmax(self.predict(x[start:stop, ...]), axis=1)
            hits = xp.count_nonzero(y == xp.astype(labels[start:stop], y.dtype, copy=False))
            correct = hits if correct is None else correct + hits
        return float(correct) / n

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
        library allows it.  The loss stays on the device: a loop need not wait for it.
        """
        self.loss(x, t)
        dout = self.last_layer.backward(lr)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        a1, a2 = self.layers["Affine1"], self.layers["Affine2"]
        for key, step in (("W1", a1.dW), ("b1", a1.db), ("W2", a2.dW), ("b2", a2.db)):
            self.params[key] -= step
        return self.last_layer.loss


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
    if not weight_init_std > 0:
        raise ValueError(f"weight_init_std must be positive, got {weight_init_std!r}")
    return float(weight_init_std)
