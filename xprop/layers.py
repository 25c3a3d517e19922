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

from xprop._constants import class_range, zero
from xprop._namespace import namespace, require_float
from xprop._sums import column_sums, row_sums
from xprop.functions import (
    check_label_shape,
    check_labels,
    labels_are_one_hot,
    sigmoid,
    squared_error_parts,
)

__all__ = [
    "AddLayer",
    "Affine",
    "MSELoss",
    "MulLayer",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
]


class MulLayer:
    """Multiplication node ``out = x * y``; ``dx = dout * y``, ``dy = dout * x``.

    Works on Python numbers (the book's apple example) and on arrays of any backend, using
    only the ``*`` operator (elementwise, broadcasting as the library does).
    """

    def __init__(self) -> None:
        self.x: Any = None
        self.y: Any = None

    def forward(self, x: Any, y: Any) -> Any:
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        # The two inputs swap: d(xy)/dx = y and d(xy)/dy = x.
        return dout * self.y, dout * self.x


class AddLayer:
    """Addition node ``out = x + y``; the upstream gradient passes to both inputs unchanged."""

    def forward(self, x: Any, y: Any) -> Any:
        return x + y

    def backward(self, dout: Any) -> tuple[Any, Any]:
        return dout * 1, dout * 1


class Relu:
    """``out = max(x, 0)``; ``dx = dout`` where ``x > 0``, else 0.

    The book zeroes ``dout`` in place (``dout[mask] = 0``), which corrupts the caller's
    array; here ``backward`` returns a new array.  At ``x == 0`` the subgradient 0 is used.
    """

    def __init__(self) -> None:
        self.x: Any = None  # the input, kept (never modified) for the backward pass
        self._xp: Any = None
        self._type: type | None = None

    def forward(self, x: Any) -> Any:
        if type(x) is not self._type:  # infer the namespace again only for a new array type
            self._xp, self._type = namespace(x), type(x)
        xp = self._xp
        # The mask is built in backward, not here: inference never pays for it.
        self.x = x
        return xp.maximum(x, zero(xp, x))

    @property
    def mask(self) -> Any:
        """The book's ``mask``: ``True`` where the last input was positive."""
        return self.x > 0

    def backward(self, dout: Any) -> Any:
        # A multiply by the 0/1 mask: several times faster than where() on a random mask.
        return dout * self._xp.astype(self.x > 0, dout.dtype)


class Sigmoid:
    """``out = 1 / (1 + exp(-x))``; ``dx = dout * out * (1 - out)`` (stable for any ``x``)."""

    def __init__(self) -> None:
        self.out: Any = None

    def forward(self, x: Any) -> Any:
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout: Any) -> Any:
        return dout * (1.0 - self.out) * self.out


class Affine:
    """Fully connected layer ``out = x @ W + b`` on a batch.

    Parameters
    ----------
    W : array
        Weights of shape ``(D, M)``, floating.
    b : array or None
        Bias of shape ``(M,)``, or ``None`` for a layer without bias.
    input_grad : bool
        Whether :meth:`backward` computes ``dx``.  The first layer of a network never needs
        it; skipping it saves one matrix product per step (``backward`` then returns ``None``).

    Notes
    -----
    ``forward`` accepts ``x`` of shape ``(N, D)`` or any ``(N, d1, d2, ...)`` with
    ``d1 * d2 * ... == D`` (flattened, e.g. images ``(N, 1, 28, 28)``).  ``backward(dout)``
    with ``dout`` of shape ``(N, M)`` sets

    - ``dW = x.T @ dout`` (shape ``(D, M)``),
    - ``db = sum(dout, axis=0)`` (shape ``(M,)``),

    and returns ``dx = dout @ W.T`` reshaped to ``x``'s original shape.

    ``W`` and ``b`` may live in an outside dict (``Affine.bound(params, "W1", "b1")``): the
    layer then reads the dict's *current* arrays at every call, so ``params[k] -= lr * g``
    trains it even where arrays are immutable and ``-=`` rebinds the entry (JAX).
    """

    def __init__(self, W: Any, b: Any = None, *, input_grad: bool = True) -> None:
        self._init(({"W": W, "b": b}), ("W", "b"), input_grad)

    def _init(
        self, store: MutableMapping[str, Any], keys: tuple[str, str | None], input_grad: bool
    ) -> None:
        self._store = store
        self._keys = keys
        self.input_grad = input_grad
        self.x: Any = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: Any = None
        self.db: Any = None
        self._xp: Any = None
        self._signature: tuple[Any, ...] | None = None

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
        signature = (type(x), x.dtype, x.shape[1:], type(W), W.dtype, W.shape, type(b))
        if signature != self._signature:
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
        require_float(xp, x, "Affine input x")
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
        self.dW = self.x.T @ dout
        self.db = None if self._keys[1] is None else column_sums(self._xp, dout)
        if not self.input_grad:
            return None
        dx = dout @ self.W.T
        if len(self.original_x_shape) != 2:
            dx = self._xp.reshape(dx, self.original_x_shape)
        return dx


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss, fused (the book's output layer).

    ``forward(x, t)`` takes logits ``x`` of shape ``(N, C)`` (or ``(C,)``) and labels ``t``:
    integer class indices ``(N,)`` or one-hot ``(N, C)``.  It returns the mean cross-entropy
    as a 0-d array of the backend — no host synchronisation — computed through log-softmax,
    so it is exact and finite for any finite logits.

    ``backward(dout=1)`` returns ``dout * (y - t) / N`` where ``y = softmax(x)``: the book's
    famous ``y - t``, times the upstream gradient (the book ignores ``dout``).

    Label shapes are always checked.  ``check_labels`` (default on) also checks that integer
    labels lie in ``[0, C)``; that reads one number from the device per call, so a GPU
    training loop with labels validated once (as ``load_mnist`` does) may turn it off.
    Unchecked, a label outside the range gets an all-zero one-hot row: its sample adds
    nothing to the loss and its gradient is the plain softmax.
    One-hot labels are cast to the logits' dtype: float64 labels never make float32 maths
    float64.
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_labels
        self.loss: Any = None
        self.y: Any = None  # softmax output, (N, C)
        self.t: Any = None  # one-hot labels, (N, C)
        self._xp: Any = None
        self._hot = False  # whether the labels are one-hot, decided with the signature
        self._signature: tuple[Any, ...] | None = None

    def forward(self, x: Any, t: Any) -> Any:
        # Namespace and dtype checks run again only when the kind of input changes.
        signature = (type(x), x.dtype, type(t), t.dtype)
        if signature != self._signature:
            self._xp = namespace(x, t)
            require_float(self._xp, x, "logits x")
            self._hot = labels_are_one_hot(self._xp, t)
            self._signature = signature
        xp, is_hot = self._xp, self._hot
        if x.ndim == 1:
            x = xp.reshape(x, (1, -1))
            t = xp.reshape(t, (1, -1)) if t.ndim == 1 else xp.reshape(t, (1,))
        check_label_shape(x.shape, t.shape, is_hot)
        n, c = x.shape
        if not is_hot:
            hot = t[:, None] == class_range(xp, t, c, t.dtype)
            # A label outside [0, C) leaves its row all False: one count finds it (one
            # device read), cheaper than comparing the labels with both ends of the range.
            if self.check_labels and int(xp.count_nonzero(hot)) != n:
                check_labels(xp, x, t)  # raises, naming the range of labels found
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

    def backward(self, dout: Any = 1) -> Any:
        return (self.y - self.t) * (dout / self.t.shape[0])


class MSELoss:
    """Mean-squared-error output layer for regression (identity output + squared error).

    ``forward(y, t)`` returns ``0.5 * sum((y - t)**2) / N`` as a 0-d array, ``N`` being the
    batch size (1 for a single 1-D sample, which is the per-sample error ``E = sum(1/2 (t -
    y)^2)`` of hand-worked examples); ``backward(dout=1)`` returns ``dout * (y - t) / N``.
    """

    def __init__(self) -> None:
        self.loss: Any = None
        self.diff: Any = None
        self.n = 1

    def forward(self, y: Any, t: Any) -> Any:
        self.loss, self.diff, self.n = squared_error_parts(y, t)
        return self.loss

    def backward(self, dout: Any = 1) -> Any:
        return self.diff * (dout / self.n)
