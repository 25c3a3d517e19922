"""The book's layers (ch. 5): each one a node of the computational graph.

A layer's ``forward`` computes its output and keeps what ``backward`` needs; ``backward``
takes the upstream gradient ``dout`` (dL/d output) and returns the gradient with respect to
each input by the chain rule.  Unlike the book, no layer ever writes into its arguments,
every backward honours ``dout``, and the code is array-API clean: it runs unchanged on
NumPy, CuPy, PyTorch, JAX and array-api-strict.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from array_api_compat import device as _device

from xprop._constants import class_range, zero
from xprop._labels import (
    as_label_dtype,
    batch_labels,
    check_label_range,
    check_scores_shape,
    label_dtype,
    labels_are_one_hot,
    read_labels,
)
from xprop._namespace import (
    check_flag,
    dtype_name,
    namespace,
    require_array,
    require_float,
    require_same_float,
)
from xprop._sums import column_sums, row_sums
from xprop.nn.functions import sigmoid, squared_error_parts

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


def _forward_first(layer: object) -> RuntimeError:
    name = type(layer).__name__
    return RuntimeError(
        f"{name}.backward was called before {name}.forward: call forward first (backward "
        "needs what the forward pass keeps)"
    )


def _check_dout(dout: Any, shape: Any, layer: object) -> None:
    """Raise unless the upstream gradient ``dout`` has the layer output's ``shape``."""
    got = getattr(dout, "shape", None)
    if got != shape:
        name = type(layer).__name__
        if got is None:
            raise TypeError(
                f"{name}.backward: dout must be an array of the output's shape "
                f"{tuple(shape)}, got {type(dout).__name__}"
            )
        raise ValueError(
            f"{name}.backward: dout has shape {tuple(got)} but the output of the last forward "
            f"had shape {tuple(shape)}; pass the gradient of the loss with respect to that "
            "output (same batch size)"
        )


def _no_host_sequences(x: Any, y: Any) -> None:
    """``[1, 2] * 3`` repeats a list and ``[1] + [2]`` joins two: never what a node means."""
    if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
        namespace(x, y)  # raises the TypeError that names backend.asarray


def _sum_to(grad: Any, like: Any) -> Any:
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


class MulLayer:
    """Multiplication node ``out = x * y``; ``dx = dout * y``, ``dy = dout * x``.

    Works on Python numbers (the book's apple example: the gradients are Python numbers
    too) and on arrays of any backend, using only the ``*`` operator.  Inputs may broadcast
    (``x (3, 2) * y (2,)``): each gradient is summed back to its input's shape.

    Raises ``TypeError`` for a Python list or tuple (``[1, 2] * 3`` would repeat the list),
    ``RuntimeError`` when ``backward`` comes before ``forward``.
    """

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        _no_host_sequences(x, y)
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        if self.x is None:
            raise _forward_first(self)
        # The two inputs swap: d(xy)/dx = y and d(xy)/dy = x.
        dx = dout * self.y
        dy = dout * self.x
        return _sum_to(dx, self.x), _sum_to(dy, self.y)


class AddLayer:
    """Addition node ``out = x + y``; the upstream gradient passes to both inputs unchanged.

    Unlike the book's, it keeps its inputs: with broadcasting (``x (3, 2) + y (2,)``) each
    gradient is summed back to its input's shape.  Python numbers work as in
    :class:`MulLayer`, and so do the errors.
    """

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        _no_host_sequences(x, y)
        self.x = x
        self.y = y
        return x + y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        if self.x is None:
            raise _forward_first(self)
        dx = dout * 1
        dy = dout * 1
        return _sum_to(dx, self.x), _sum_to(dy, self.y)


class Relu:
    """``out = max(x, 0)``; ``dx = dout`` where ``x > 0``, else 0.

    The book zeroes ``dout`` in place (``dout[mask] = 0``), which corrupts the caller's
    array; here ``backward`` returns a new array.  At ``x == 0`` the subgradient 0 is used.
    ``backward`` raises ``RuntimeError`` before any ``forward``, and ``ValueError`` for a
    ``dout`` of another shape than the output.
    """

    def __init__(self) -> None:
        self.x: Any = None  # the input, kept (never modified) for the backward pass
        self._xp: Any = None
        self._type: type | None = None

    def forward(self, x: Any) -> Any:
        if type(x) is not self._type:  # infer the namespace again only for a new array type
            self._xp, self._type = namespace(x), type(x)
        xp = self._xp
        self.x = x
        return xp.maximum(x, zero(xp, x))

    def backward(self, dout: Any) -> Any:
        if self.x is None:
            raise _forward_first(self)
        _check_dout(dout, self.x.shape, self)
        # The book's mask, built here rather than in forward: inference never pays for it.
        mask = self.x > 0
        # A multiply by the 0/1 mask: several times faster than where() on a random mask.
        return dout * self._xp.astype(mask, dout.dtype)


class Sigmoid:
    """``out = 1 / (1 + exp(-x))``; ``dx = dout * out * (1 - out)`` (stable for any ``x``).

    ``backward`` raises ``RuntimeError`` before any ``forward``, and ``ValueError`` for a
    ``dout`` of another shape than the output.
    """

    def __init__(self) -> None:
        self.out: Any = None

    def forward(self, x: Any) -> Any:
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout: Any) -> Any:
        if self.out is None:
            raise _forward_first(self)
        _check_dout(dout, self.out.shape, self)
        return dout * (1.0 - self.out) * self.out


class Affine:
    """Fully connected layer ``out = x @ W + b`` on a batch.

    Parameters
    ----------
    W : array
        Weights of shape ``(D, M)``, floating: their dtype is the layer's dtype.
    b : array or None
        Bias of shape ``(M,)`` in ``W``'s dtype, or ``None`` for a layer without bias (it
        then has no ``b`` to set, and ``db`` stays ``None``).
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

    ``W`` and ``b`` may live in an outside dict (``Affine.bound(params, "W1", "b1")``): the
    layer then reads the dict's *current* arrays at every call, so ``params[k] -= lr * g``
    trains it even where arrays are immutable and ``-=`` rebinds the entry (JAX).

    Raises
    ------
    TypeError
        Non-arrays (a Python list: convert it with ``backend.asarray``), non-floating
        ``W`` or ``x``, or an ``x``/``b``/``dout`` whose floating dtype is not ``W``'s (the
        parameters decide the dtype, on every backend).
    ValueError
        ``W`` not 2-D, ``b`` not ``(M,)``, ``x`` without a batch axis or with the wrong
        number of features, ``dout`` not ``(N, M)``.
    RuntimeError
        ``backward`` before ``forward``.
    """

    def __init__(self, W: Any, b: Any = None, *, input_grad: bool = True) -> None:
        # One construction path: a layer over its own little dict, with no bias key at all
        # when there is no bias (so db stays None and layer.b cannot be set).
        if b is None:
            self._init({"W": W}, ("W", None), input_grad)
        else:
            self._init({"W": W, "b": b}, ("W", "b"), input_grad)

    def _init(
        self, store: MutableMapping[str, Any], keys: tuple[str, str | None], input_grad: bool
    ) -> None:
        for key in keys:
            if key is not None and key not in store:
                raise KeyError(f"Affine.bound: params has no entry {key!r}; it has {list(store)}")
        self._store = store
        self._keys = keys
        self.input_grad = check_flag(input_grad, "input_grad")
        self.x: Any = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: Any = None
        self.db: Any = None
        self._xp: Any = None
        self._signature: tuple[Any, ...] | None = None
        W, b = self.W, self.b
        _check_weights(namespace(W, b), W, b)

    @classmethod
    def bound(
        cls,
        params: MutableMapping[str, Any],
        w_key: str,
        b_key: str | None,
        *,
        input_grad: bool = True,
    ) -> Affine:
        """An Affine layer whose ``W``/``b`` are ``params[w_key]``/``params[b_key]``, live."""
        layer = cls.__new__(cls)
        layer._init(params, (w_key, b_key), input_grad)
        return layer

    @property
    def W(self) -> Any:
        return self._store[self._keys[0]]

    @W.setter
    def W(self, value: Any) -> None:
        self._store[self._keys[0]] = value

    @property
    def b(self) -> Any:
        return None if self._keys[1] is None else self._store[self._keys[1]]

    @b.setter
    def b(self, value: Any) -> None:
        if self._keys[1] is None:
            raise AttributeError("this Affine layer was built without a bias")
        self._store[self._keys[1]] = value

    def forward(self, x: Any) -> Any:
        W, b = self.W, self.b
        # Validation (namespace inference, dtype and shape checks) costs as much as the bias
        # add at the book's size, so it runs again only when the kind of input changes.
        try:
            signature: tuple[Any, ...] | None = (
                type(x),
                x.dtype,
                x.shape[1:],
                type(W),
                W.dtype,
                W.shape,
                type(b),
                None if b is None else (b.dtype, b.shape),
            )
        except AttributeError:  # not an array: _validate says what to do
            signature = None
        if signature is None or signature != self._signature:
            self._xp = self._validate(x, W, b)
            self._signature = signature
        self.original_x_shape = tuple(x.shape)
        if x.ndim != 2:
            x = self._xp.reshape(x, (x.shape[0], -1))
        self.x = x
        out = x @ W
        return out if b is None else out + b

    def _validate(self, x: Any, W: Any, b: Any) -> Any:
        xp = namespace(x, W, b)
        require_array(x, "Affine input x")
        _check_weights(xp, W, b)
        require_float(xp, x, "Affine input x")
        require_same_float(xp, x, "Affine input x", W.dtype, "the layer's W")
        if x.ndim < 2:
            raise ValueError(
                f"Affine input must be a batch of shape (N, D) or (N, d1, ...), got "
                f"shape {tuple(x.shape)}; add a batch axis, e.g. xp.reshape(x, (1, -1))"
            )
        features = 1
        for s in x.shape[1:]:
            features *= s
        if features != W.shape[0]:
            raise ValueError(
                f"Affine input has {features} features per sample (shape "
                f"{tuple(x.shape)}) but W has shape {tuple(W.shape)} and expects "
                f"{W.shape[0]}; reshape the input or build W with {features} rows"
            )
        return xp

    def backward(self, dout: Any) -> Any:
        x = self.x
        if x is None:
            raise _forward_first(self)
        W = self.W
        _check_dout(dout, (x.shape[0], W.shape[1]), self)
        if dout.dtype != x.dtype:
            require_same_float(self._xp, dout, "Affine.backward: dout", x.dtype, "the layer")
        self.dW = x.T @ dout
        self.db = None if self._keys[1] is None else column_sums(self._xp, dout)
        if not self.input_grad:
            return None
        dx = dout @ W.T
        if len(self.original_x_shape) != 2:
            dx = self._xp.reshape(dx, self.original_x_shape)
        return dx


def _check_weights(xp: Any, W: Any, b: Any) -> None:
    """Raise unless ``W`` is a floating ``(D, M)`` array and ``b`` is ``None`` or ``(M,)``."""
    require_array(W, "Affine weights W")
    require_float(xp, W, "Affine weights W")
    if W.ndim != 2:
        raise ValueError(
            f"Affine weights W must have shape (D, M), got shape {tuple(W.shape)}; for one "
            "output use shape (D, 1), e.g. xp.reshape(W, (-1, 1))"
        )
    if b is None:
        return
    require_array(b, "Affine bias b")
    if b.dtype != W.dtype:
        raise TypeError(
            f"Affine bias b has dtype {dtype_name(xp, b.dtype)} but W has "
            f"{dtype_name(xp, W.dtype)}; create both with the same backend and dtype"
        )
    if tuple(b.shape) != (W.shape[1],):
        raise ValueError(
            f"Affine bias b must have shape ({W.shape[1]},) to match W of shape "
            f"{tuple(W.shape)}, got {tuple(b.shape)}"
        )


class SoftmaxWithLoss:
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
    :func:`xprop.nn.functions.validate_labels`) may turn it off; so must code traced by
    ``jax.jit``, where a device read is impossible (the error says so).
    Unchecked, a label outside the range gets an all-zero one-hot row: its sample adds
    nothing to the loss and its gradient is the plain softmax.
    One-hot labels are cast to the logits' dtype: float64 labels never make float32 maths
    float64.

    Raises ``TypeError``/``ValueError`` for bad logits or labels (non-arrays, non-floating
    logits, logits that are not ``(N, C)`` or ``(C,)``, an empty batch, labels of the wrong
    shape or, checked, out of range), and ``RuntimeError`` for ``backward`` before
    ``forward``.
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_flag(check_labels, "check_labels")
        self.loss: Any = None
        self.y: Any = None  # softmax output, (N, C)
        self.t: Any = None  # one-hot labels, (N, C)
        self._xp: Any = None
        self._hot = False  # whether the labels are one-hot, decided with the signature
        self._label_dtype: Any = None  # the integer dtype labels are compared in
        self._one_sample = False  # 1-D logits: dx is 1-D too
        self._signature: tuple[Any, ...] | None = None

    def forward(self, x: Any, t: Any) -> Any:
        # Namespace, dtype and label-kind checks run again only when the kind of input
        # changes (the class count is part of it: it decides the labels' compare dtype).
        try:
            signature: tuple[Any, ...] | None = (
                type(x),
                x.dtype,
                x.shape[-1:],
                type(t),
                t.dtype,
            )
        except AttributeError:  # not an array: _validate says what to do
            signature = None
        if signature is None or signature != self._signature:
            self._validate(x, t)
            self._signature = signature
        xp, is_hot = self._xp, self._hot
        one_sample = x.ndim == 1
        x, t = batch_labels(xp, x, t, is_hot, "logits")
        self._one_sample = one_sample
        n, c = x.shape
        if not is_hot:
            t = as_label_dtype(xp, t, self._label_dtype)
            hot = t[:, None] == class_range(xp, t, c, self._label_dtype)
            # A label outside [0, C) leaves its row all False: one count finds it (one
            # device read), cheaper than comparing the labels with both ends of the range.
            if self.check_labels and read_labels(xp, xp.count_nonzero(hot), t) != n:
                check_label_range(xp, t, c)  # raises, naming the range of labels found
            t = xp.astype(hot, x.dtype)
        elif t.dtype != x.dtype:
            t = xp.astype(t, x.dtype)  # float64 labels must not turn float32 maths float64
        # One exp serves both the probabilities and the log-probabilities.
        z = x - xp.max(x, axis=-1, keepdims=True)
        e = xp.exp(z)
        s = row_sums(xp, e)
        self.y = e / s
        self.t = t
        # Cross-entropy through log-softmax, z - log(s): exact, no log(0), no +1e-7.
        loss = -xp.sum(t * (z - xp.log(s))) / n
        # xp.asarray: NumPy reductions give a NumPy scalar; callers get a 0-d array everywhere.
        self.loss = xp.asarray(loss)
        return self.loss

    def _validate(self, x: Any, t: Any) -> None:
        xp = namespace(x, t)
        require_array(x, "logits x")
        require_array(t, "labels t")
        require_float(xp, x, "logits x")
        check_scores_shape(tuple(x.shape), "logits")
        self._hot = labels_are_one_hot(xp, t)
        self._label_dtype = None if self._hot else label_dtype(xp, t, x.shape[-1])
        self._xp = xp

    def backward(self, dout: Any = 1) -> Any:
        if self.y is None:
            raise _forward_first(self)
        _check_scalar_dout(dout, self)
        dx = (self.y - self.t) * (dout / self.t.shape[0])
        return self._xp.reshape(dx, (dx.shape[1],)) if self._one_sample else dx


def _check_scalar_dout(dout: Any, layer: object) -> None:
    """A loss is a scalar: its upstream gradient is a number or a 0-d array."""
    if not isinstance(dout, _SCALARS) and getattr(dout, "ndim", None) != 0:
        got = getattr(dout, "shape", type(dout).__name__)
        raise ValueError(
            f"{type(layer).__name__}.backward: dout is the gradient with respect to the "
            f"scalar loss, so a number or a 0-d array, got {got}"
        )


class MSELoss:
    """Mean-squared-error output layer for regression (identity output + squared error).

    ``forward(y, t)`` returns ``0.5 * sum((y - t)**2) / N`` as a 0-d array, ``N`` being the
    batch size (1 for a single 1-D sample, which is the per-sample error ``E = sum(1/2 (t -
    y)^2)`` of hand-worked examples); ``backward(dout=1)`` returns ``dout * (y - t) / N``.
    Targets follow ``y``'s dtype.  Raises as :func:`xprop.nn.functions.mean_squared_error`
    does, and ``RuntimeError`` for ``backward`` before ``forward``.
    """

    def __init__(self) -> None:
        self.loss: Any = None
        self.diff: Any = None
        self.n = 1

    def forward(self, y: Any, t: Any) -> Any:
        self.loss, self.diff, self.n = squared_error_parts(y, t)
        return self.loss

    def backward(self, dout: Any = 1) -> Any:
        if self.diff is None:
            raise _forward_first(self)
        _check_scalar_dout(dout, self)
        return self.diff * (dout / self.n)
