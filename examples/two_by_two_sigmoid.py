"""A 2-2-2 sigmoid network by hand
===============================

A 2-2-2 sigmoid network worked by hand, then by layers, then checked numerically.  This is
the network of the classic step-by-step backpropagation tutorials: two inputs, two sigmoid
hidden units, two sigmoid outputs, no biases, and the squared error ``E = 1/2 (t1 - o1)^2 +
1/2 (t2 - o2)^2``.  The weights are named as in those tutorials::

    net_h1 = w1 x1 + w2 x2     net_o1 = w5 out_h1 + w6 out_h2
    net_h2 = w3 x1 + w4 x2     net_o2 = w7 out_h1 + w8 out_h2

The chosen values: ``x = (0.1, 0.2)``, ``w1..w8 = 0.1, 0.2, ..., 0.8``, target
``t = (0.2, 0.1)``, learning rate 0.6, 1500 steps of plain gradient descent, in float64.
The loss falls from 0.27 to about 2e-7.

The script then shows three things at the initial weights:

1. the gradient derived by hand, one chain rule per weight
   (``dE/dw = dE/dout * dout/dnet * dnet/dw``), equals the layers' backward pass;
2. the gradient checker (:func:`xprop.check_backward`) accepts the hand-derived formula;
3. it rejects a wrong one that *adds* the three chain-rule factors instead of multiplying
   them for two weights (w6 and w7), a slip one tutorial made.

Usage::

    python examples/two_by_two_sigmoid.py [--backend torch]

A backend that cannot run here prints one line saying why and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as device_of

import xprop
from xprop.nn.layers import Affine, MSELoss, Sigmoid

X = (0.1, 0.2)
T = (0.2, 0.1)
W_INIT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # w1..w8
LR = 0.6
STEPS = 1500
WRONG = ("w6", "w7")  # the weights whose chain rule the broken formula adds up


class Network:
    """Affine (no bias) - Sigmoid - Affine (no bias) - Sigmoid - MSELoss, from the book's layers.

    ``W1[i, j]`` is the weight from input ``i`` to hidden unit ``j`` (so ``x @ W1`` gives
    ``(net_h1, net_h2)``): ``W1 = [[w1, w3], [w2, w4]]`` and ``W2 = [[w5, w7], [w6, w8]]``.
    """

    def __init__(self, w: Any) -> None:
        W1, W2 = weight_matrices(w)
        self.layers = [Affine(W1, None), Sigmoid(), Affine(W2, None), Sigmoid()]
        self.loss_layer = MSELoss()

    def forward(self, x: Any, t: Any) -> tuple[Any, Any]:
        """Prediction ``(1, 2)`` and loss (0-d) for one sample ``x`` of shape ``(1, 2)``."""
        for layer in self.layers:
            x = layer.forward(x)
        return x, self.loss_layer.forward(x, t)

    def backward(self) -> Any:
        """dE/dw for ``w1..w8`` as a vector of shape ``(8,)``, by backpropagation."""
        dout = self.loss_layer.backward(1.0)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return weight_vector(self.layers[0].dW, self.layers[2].dW)

    def sgd_step(self, lr: float) -> None:
        for layer in (self.layers[0], self.layers[2]):
            layer.W = layer.W - lr * layer.dW


def weight_matrices(w: Any) -> tuple[Any, Any]:
    """``(W1, W2)`` of shape ``(2, 2)`` each from the vector ``w1..w8`` (see :class:`Network`)."""
    xp = array_namespace(w)
    # reshape gives [[w1, w2], [w3, w4]]; the transpose puts each hidden unit in a column.
    return xp.reshape(w[0:4], (2, 2)).T, xp.reshape(w[4:8], (2, 2)).T


def weight_vector(dW1: Any, dW2: Any) -> Any:
    """The inverse of :func:`weight_matrices`: ``(8,)`` in the order ``w1..w8``."""
    xp = array_namespace(dW1, dW2)
    return xp.concat([xp.reshape(dW1.T, (4,)), xp.reshape(dW2.T, (4,))])


def hand_gradient(w: list[float], wrong: tuple[str, ...] = ()) -> list[float]:
    """dE/dw1..dE/dw8 for one sample, one chain rule per weight, in plain Python floats.

    ``wrong`` names weights whose three chain-rule factors are *added* (the slip the
    gradient checker must catch) instead of multiplied.
    """
    x1, x2 = X
    t1, t2 = T
    w1, w2, w3, w4, w5, w6, w7, w8 = w

    def sigmoid(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    # forward
    out_h1 = sigmoid(w1 * x1 + w2 * x2)
    out_h2 = sigmoid(w3 * x1 + w4 * x2)
    out_o1 = sigmoid(w5 * out_h1 + w6 * out_h2)
    out_o2 = sigmoid(w7 * out_h1 + w8 * out_h2)

    # the three factors of each weight's chain rule
    dE_dout_o1 = out_o1 - t1  # E = 1/2 (t1 - out_o1)^2 + ...
    dE_dout_o2 = out_o2 - t2
    dout_o1_dnet_o1 = out_o1 * (1.0 - out_o1)  # sigmoid' = out (1 - out)
    dout_o2_dnet_o2 = out_o2 * (1.0 - out_o2)
    # a hidden output reaches E through both outputs: the two paths add up
    dE_dout_h1 = dE_dout_o1 * dout_o1_dnet_o1 * w5 + dE_dout_o2 * dout_o2_dnet_o2 * w7
    dE_dout_h2 = dE_dout_o1 * dout_o1_dnet_o1 * w6 + dE_dout_o2 * dout_o2_dnet_o2 * w8
    dout_h1_dnet_h1 = out_h1 * (1.0 - out_h1)
    dout_h2_dnet_h2 = out_h2 * (1.0 - out_h2)

    factors = {  # weight: (dE/dout, dout/dnet, dnet/dw)
        "w1": (dE_dout_h1, dout_h1_dnet_h1, x1),
        "w2": (dE_dout_h1, dout_h1_dnet_h1, x2),
        "w3": (dE_dout_h2, dout_h2_dnet_h2, x1),
        "w4": (dE_dout_h2, dout_h2_dnet_h2, x2),
        "w5": (dE_dout_o1, dout_o1_dnet_o1, out_h1),
        "w6": (dE_dout_o1, dout_o1_dnet_o1, out_h2),
        "w7": (dE_dout_o2, dout_o2_dnet_o2, out_h1),
        "w8": (dE_dout_o2, dout_o2_dnet_o2, out_h2),
    }
    return [a + b + c if name in wrong else a * b * c for name, (a, b, c) in factors.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    args = parser.parse_args(argv)
    # float64: the loss ends near 2e-7, and gradient checks need the precision.
    try:
        backend = xprop.get_backend(args.backend, dtype="float64")
    except xprop.BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    xp = backend.xp

    def array(values: Any, like: Any = None) -> Any:
        dev = backend.device if like is None else device_of(like)
        return xp.asarray(values, dtype=xp.float64, device=dev)

    x, t, w_init = array([X]), array([T]), array(W_INIT)

    print(f"x = {X}, t = {T}, w1..w8 = {W_INIT}, lr = {LR}, on {backend.describe()}")
    print(f"{'step':>5}  {'o1':>9}  {'o2':>9}  {'loss':>10}")
    net = Network(w_init)
    for step in range(STEPS + 1):
        y, loss = net.forward(x, t)
        if step % 100 == 0:
            print(f"{step:>5}  {float(y[0, 0]):9.6f}  {float(y[0, 1]):9.6f}  {float(loss):10.3e}")
        if step < STEPS:
            net.backward()
            net.sgd_step(LR)

    print("\nAt the initial weights, dE/dw by hand (chain rule per weight) and by the layers:")
    hand = hand_gradient(list(W_INIT))
    layers = Network(w_init)
    layers.forward(x, t)
    by_layers = backend.to_numpy(layers.backward()).tolist()
    for i, (h, g) in enumerate(zip(hand, by_layers, strict=True), start=1):
        print(f"  w{i}  {h: .12f}  {g: .12f}")
    worst = max(abs(h - g) for h, g in zip(hand, by_layers, strict=True))
    print(f"  largest difference: {worst:.1e}")

    def loss_of_weights(w: Any) -> Any:
        return Network(w).forward(array([X], like=w), array([T], like=w))[1]

    def backward_by_hand(wrong: tuple[str, ...]) -> Any:
        def backward(dout: Any, w: Any) -> Any:
            grad = hand_gradient([float(w[i]) for i in range(8)], wrong)
            return dout * array(grad, like=w)

        return backward

    result = xprop.check_backward(loss_of_weights, w_init, backward=backward_by_hand(()))
    print(
        "\nGradient check of the hand-derived formula: passed "
        f"(max abs error {result.max_abs_error['x0']:.1e})"
    )
    try:
        xprop.check_backward(loss_of_weights, w_init, backward=backward_by_hand(WRONG))
    except AssertionError as report:
        print(f"Gradient check with the factors of {' and '.join(WRONG)} added, not multiplied:")
        print(f"  caught (index i of x0 is weight w(i+1)): {report}")
        return 0
    print("error: the gradient checker missed the wrong formula", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
