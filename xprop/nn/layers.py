"""The book's layers (ch. 5): each one a node of the computational graph.

A layer's ``forward`` computes its output and keeps what ``backward`` needs; ``backward``
takes the upstream gradient ``dout`` (dL/d output) and returns the gradient with respect to
each input by the chain rule.  Unlike the book, no layer ever writes into its arguments,
every backward honours ``dout``, and the code is array-API clean: it runs unchanged on
NumPy, CuPy, PyTorch, JAX and array-api-strict.
"""

from __future__ import annotations

from array_api_compat import device as _device

from xprop._constants import zero
from xprop._labels import one_hot_targets
from xprop._namespace import namespace
from xprop._sums import column_sums, row_sums
from xprop.checks import check_flag, require_array, require_float
from xprop.nn.functions import sigmoid, squared_error_parts
from xprop.nn.layer import Layer, check_bias
from xprop.typing import Array

__all__ = [
    "AddLayer",
    "Affine",
    "MSELoss",
    "MulLayer",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
]

_SCALARS = (int, float, bool)


def _no_host_sequences(x: Array | float, y: Array | float) -> None:
    """``[1, 2] * 3`` repeats a list and ``[1] + [2]`` joins two: never what a node means."""
    if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
        namespace(x, y)  # raises the TypeError that names backend.asarray


def _sum_to(grad: Array | float, like: Array | float) -> Array | float:
    """The gradient ``grad`` flowing to input ``like``, in ``like``'s shape.

    Broadcasting in the forward pass copies an input along some axes (``x (3, 2) * y
    (2,)`` uses ``y`` three times), so its gradient is the sum over those copies.  A Python
    number input gets a Python number back when the gradient is one (the book's shopping
    examples), else a 0-d array; a Python number gradient of an array input is broadcast.
    """
    if isinstance(like, _SCALARS):
        if isinstance(grad, _SCALARS):
            return grad
        xp = namespace(grad)
        return xp.asarray(xp.sum(grad)) if grad.ndim else grad
    xp = namespace(like, grad)
    shape = tuple(like.shape)
    if isinstance(grad, _SCALARS):
        dtype = like.dtype if xp.isdtype(like.dtype, "real floating") else None
        return xp.full(shape, grad, dtype=dtype, device=_device(like))
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0 or any(g != s and s != 1 for g, s in zip(grad.shape[lead:], shape, strict=True)):
        # dout was smaller than the output (e.g. 0-d): broadcast it up first.
        grad = grad + xp.zeros(shape, dtype=grad.dtype, device=_device(grad))
        if tuple(grad.shape) == shape:
            return grad
        lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1
    )
    return xp.asarray(xp.reshape(xp.sum(grad, axis=axes), shape))


class MulLayer(Layer):
    """Multiplication node ``out = x * y``; ``dx = dout * y``, ``dy = dout * x``.

    Works on Python numbers (the book's apple example: the gradients are Python numbers
    too) and on arrays of any backend, using only the ``*`` operator.  Inputs may broadcast
    (``x (3, 2) * y (2,)``): each gradient is summed back to its input's shape.

    Raises ``TypeError`` for a Python list or tuple (``[1, 2] * 3`` would repeat the list),
    ``RuntimeError`` when ``backward`` comes before ``forward``.
    """

    def __init__(self) -> None:
        self.x: Array = None
        self.y: Array = None

    def forward(self, x: Array | float, y: Array | float) -> Array | float:
        _no_host_sequences(x, y)
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout: Array | float) -> tuple[Array | float, Array | float]:
        self.require_forward(self.x)
        # The two inputs swap: d(xy)/dx = y and d(xy)/dy = x.
        dx = dout * self.y
        dy = dout * self.x
        return _sum_to(dx, self.x), _sum_to(dy, self.y)


class AddLayer(Layer):
    """Addition node ``out = x + y``; the upstream gradient passes to both inputs unchanged.

    Unlike the book's, it keeps its inputs: with broadcasting (``x (3, 2) + y (2,)``) each
    gradient is summed back to its input's shape.  Python numbers work as in
    :class:`MulLayer`, and so do the errors.
    """

    def __init__(self) -> None:
        self.x: Array = None
        self.y: Array = None

    def forward(self, x: Array | float, y: Array | float) -> Array | float:
        _no_host_sequences(x, y)
        self.x = x
        self.y = y
        return x + y

    def backward(self, dout: Array | float) -> tuple[Array | float, Array | float]:
        self.require_forward(self.x)
        dx = dout * 1
        dy = dout * 1
        return _sum_to(dx, self.x), _sum_to(dy, self.y)


class Relu(Layer):
    """``out = max(x, 0)``; ``dx = dout`` where ``x > 0``, else 0.

    The book keeps ``mask = (x <= 0)`` and zeroes ``dout`` in place (``dout[mask] = 0``),
    which corrupts the caller's array; here ``backward`` returns a new array, and the mask
    is built there from the kept input, so inference never pays for it.  At ``x == 0`` the
    subgradient 0 is used.
    """

    def __init__(self) -> None:
        self.x: Array = None

    def forward(self, x: Array) -> Array:
        xp = namespace(x)
        self.x = x
        return xp.maximum(x, zero(xp, x))

    def backward(self, dout: Array) -> Array:
        xp = self.check_dout(dout, None if self.x is None else self.x.shape)
        mask = self.x > 0
        # A multiply by the 0/1 mask: several times faster than where() on a random mask.
        return dout * xp.astype(mask, dout.dtype)


class Sigmoid(Layer):
    """``out = 1 / (1 + exp(-x))``; ``dx = dout * out * (1 - out)`` (stable for any ``x``)."""

    def __init__(self) -> None:
        self.out: Array = None

    def forward(self, x: Array) -> Array:
        out = sigmoid(x)
        self.out = out
        return out

    def backward(self, dout: Array) -> Array:
        self.check_dout(dout, None if self.out is None else self.out.shape)
        dx = dout * (1.0 - self.out) * self.out
        return dx


class Affine(Layer):
    """Fully connected layer ``out = x @ W + b`` on a batch.

    Parameters
    ----------
    W : array
        Weights of shape ``(D, M)``, floating: their dtype is the layer's dtype.
    b : array or None
        Bias of shape ``(M,)`` in ``W``'s dtype, or ``None`` for a layer without bias
        (``db`` then stays ``None``).
    input_grad : bool
        Whether :meth:`backward` computes ``dx``.  The first layer of a network never needs
        it; skipping it saves one matrix product per step (``backward`` then returns ``None``).

    Notes
    -----
    ``forward`` accepts ``x`` of shape ``(N, D)`` or any ``(N, d1, d2, ...)`` with
    ``d1 * d2 * ... == D`` (flattened, e.g. images ``(N, 1, 28, 28)``), in ``W``'s dtype.
    ``backward(dout)`` with ``dout`` of shape ``(N, M)`` sets

    - ``dW = x.T @ dout`` (shape ``(D, M)``),
    - ``db = sum(dout, axis=0)`` (shape ``(M,)``),

    and returns ``dx = dout @ W.T`` reshaped to ``x``'s original shape.

    Raises
    ------
    TypeError
        Non-arrays (a Python list: convert it with ``backend.asarray``), non-floating
        ``W``, or an ``x``/``b``/``dout`` whose dtype is not ``W``'s (the parameters decide
        the dtype, on every backend).
    ValueError
        ``W`` not 2-D, ``b`` not ``(M,)``, ``x`` without a batch axis or with the wrong
        number of features, ``dout`` not ``(N, M)``.
    RuntimeError
        ``backward`` before ``forward``.
    """

    param_names = ("W", "b")

    def __init__(self, W: Array, b: Array | None = None, *, input_grad: bool = True) -> None:
        check_weights(W, b)
        self.W = W
        self.b = b
        self.input_grad = check_flag(input_grad, "input_grad")
        self.x: Array = None
        self.original_x_shape: tuple[int, ...] | None = None
        # gradients of the weights and the bias
        self.dW: Array = None
        self.db: Array = None

    def forward(self, x: Array) -> Array:
        W, b = self.W, self.b
        xp = self.check_input(x, W, W.shape[0], "the layer's W")
        if b is not None and (b.shape != W.shape[1:] or b.dtype != W.dtype):
            check_weights(W, b)  # a bias set after construction: says what is wrong
        self.original_x_shape = tuple(x.shape)
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], W.shape[0]))  # not -1: empty batches too
        self.x = x
        out = x @ W
        return out if b is None else out + b

    def backward(self, dout: Array) -> Array | None:
        x, W = self.x, self.W
        shape = None if x is None else (x.shape[0], W.shape[1])
        xp = self.check_dout(dout, shape, x)
        self.dW = x.T @ dout
        self.db = None if self.b is None else column_sums(xp, dout)
        if not self.input_grad:
            return None
        dx = dout @ W.T
        original = self.original_x_shape  # set with x by forward
        return dx if original is None or len(original) == 2 else xp.reshape(dx, original)


def check_weights(W: Array, b: Array) -> None:
    """Raise unless ``W`` is a floating ``(D, M)`` array and ``b`` is ``None`` or ``(M,)``."""
    require_array(W, "Affine weights W")
    xp = namespace(W, b)
    require_float(xp, W, "Affine weights W")
    if W.ndim != 2:
        raise ValueError(
            f"Affine weights W must have shape (D, M), got shape {tuple(W.shape)}; for one "
            "output use shape (D, 1), e.g. xp.reshape(W, (-1, 1))"
        )
    if b is None:
        return
    check_bias(xp, W, b, W.shape[1], "Affine")


class SoftmaxWithLoss(Layer):
    """Softmax followed by the mean cross-entropy loss, fused (the book's output layer).

    ``forward(x, t)`` takes logits ``x`` of shape ``(N, C)`` (or ``(C,)`` for one sample)
    and labels ``t``: integer class indices ``(N,)`` of any integer dtype (``()`` or ``(1,)``
    for one sample), or one-hot ``(N, C)`` (``(C,)``).  It returns the mean cross-entropy
    as a 0-d array of the backend — no host synchronisation — computed through log-softmax,
    so it is exact and finite for any finite logits.

    ``backward(dout=1)`` returns ``dout * (y - t) / N`` where ``y = softmax(x)``, in the
    logits' shape: the book's famous ``y - t``, times the upstream gradient (the book
    ignores ``dout``).  ``dout`` is a number or a 0-d array (the loss is a scalar).

    Label shapes are always checked.  ``check_labels`` (default on) also checks that integer
    labels lie in ``[0, C)``; that reads one number from the device per call, so a GPU
    training loop with labels validated once (as ``load_mnist`` does, or
    :func:`xprop.validate_labels`) may turn it off; compiled steps always do.  Unchecked, a
    label outside the range gets an all-zero one-hot row: its sample adds nothing to the
    loss and its gradient is the plain softmax.  One-hot labels are cast to the logits'
    dtype: float64 labels never make float32 maths float64.

    Raises ``TypeError``/``ValueError`` for bad logits or labels (non-arrays, non-floating
    logits, logits that are not ``(N, C)`` or ``(C,)``, an empty batch, labels of the wrong
    shape or, checked, out of range), and ``RuntimeError`` for ``backward`` before
    ``forward``.
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_flag(check_labels, "check_labels")
        self.loss: Array = None
        self.y: Array = None  # softmax output, (N, C)
        self.t: Array = None  # one-hot labels, (N, C)
        self._one_sample = False  # 1-D logits: dx is 1-D too

    def forward(self, x: Array, t: Array) -> Array:
        xp = namespace(x, t)
        self._one_sample = getattr(x, "ndim", None) == 1
        x, self.t = one_hot_targets(xp, x, t, check_range=self.check_labels)
        # softmax and the cross-entropy through log-softmax z - log(s): one exp for both,
        # exact, no log(0), no +1e-7.
        z = x - xp.max(x, axis=-1, keepdims=True)
        e = xp.exp(z)
        s = row_sums(xp, e)
        self.y = e / s
        # xp.asarray: NumPy reductions give a NumPy scalar; callers get a 0-d array everywhere.
        self.loss = xp.asarray(-xp.sum(self.t * (z - xp.log(s))) / x.shape[0])
        return self.loss

    def backward(self, dout: Array | float = 1) -> Array:
        self.require_forward(self.y)
        check_scalar_dout(dout, self)
        batch_size = self.t.shape[0]
        dx = (self.y - self.t) * (dout / batch_size)
        return namespace(dx).reshape(dx, (dx.shape[1],)) if self._one_sample else dx


def check_scalar_dout(dout: Array | float, layer: object) -> None:
    """A loss is a scalar: its upstream gradient is a number or a 0-d array."""
    if not isinstance(dout, _SCALARS) and getattr(dout, "ndim", None) != 0:
        got = getattr(dout, "shape", type(dout).__name__)
        raise ValueError(
            f"{type(layer).__name__}.backward: dout is the gradient with respect to the "
            f"scalar loss, so a number or a 0-d array, got {got}"
        )


class MSELoss(Layer):
    """Mean-squared-error output layer for regression (identity output + squared error).

    ``forward(y, t)`` returns ``0.5 * sum((y - t)**2) / N`` as a 0-d array, ``N`` being the
    batch size (1 for a single 1-D sample, which is the per-sample error ``E = sum(1/2 (t -
    y)^2)`` of hand-worked examples); ``backward(dout=1)`` returns ``dout * (y - t) / N``.
    Targets follow ``y``'s dtype.  Raises as :func:`xprop.nn.functions.mean_squared_error`
    does, and ``RuntimeError`` for ``backward`` before ``forward``.
    """

    def __init__(self) -> None:
        self.loss: Array = None
        self.diff: Array = None
        self.n = 1

    def forward(self, y: Array, t: Array) -> Array:
        self.loss, self.diff, self.n = squared_error_parts(y, t)
        return self.loss

    def backward(self, dout: Array | float = 1) -> Array:
        self.require_forward(self.diff)
        check_scalar_dout(dout, self)
        return self.diff * (dout / self.n)
