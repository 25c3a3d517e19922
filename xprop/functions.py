"""Activation and loss functions of the book (ch. 3-4), numerically stable, on any backend.

Every function infers its array namespace from its inputs and returns arrays of the same
library, on the same device, in the input's floating dtype.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from xprop._constants import zero
from xprop._namespace import namespace, require_float

__all__ = [
    "check_labels",
    "cross_entropy_error",
    "log_softmax",
    "mean_squared_error",
    "one_hot",
    "relu",
    "sigmoid",
    "softmax",
]


def sigmoid(x: Any) -> Any:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise; derivative ``y * (1 - y)``.

    Computed from ``e = exp(-|x|)``, which never overflows (no warning at ``x = ±1000``):
    ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0``, so small results keep
    full relative precision too (``sigmoid(-40)`` is ``4.2e-18``, not 0).
    """
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    return xp.where(x >= 0, r, e * r)


def relu(x: Any) -> Any:
    """Rectified linear unit ``max(x, 0)``, elementwise; derivative 1 where ``x > 0``, else 0."""
    xp = namespace(x)
    return xp.maximum(x, zero(xp, x))


def softmax(x: Any) -> Any:
    """Softmax over the last axis, for any leading dimensions: ``exp(x) / sum(exp(x))``.

    The row maximum is subtracted first, so logits of ``1e4`` give finite results.
    Shape and dtype are those of ``x``.
    """
    xp = namespace(x)
    z = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return z / xp.sum(z, axis=-1, keepdims=True)


def log_softmax(x: Any) -> Any:
    """``log(softmax(x))`` over the last axis, exact and finite for any finite logits.

    ``z - log(sum(exp(z)))`` with ``z`` max-shifted: no ``log(0)`` and no ``+1e-7`` bias.
    """
    xp = namespace(x)
    z = x - xp.max(x, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def check_labels(xp: Any, y: Any, t: Any, *, check_range: bool = True) -> bool:
    """Validate labels ``t`` against scores ``y`` of shape ``(N, C)``; ``True`` if one-hot.

    Integer labels must have shape ``(N,)`` and (with ``check_range``) values in ``[0, C)``;
    one-hot (floating) labels must have ``y``'s shape.  The shape checks are free; the range
    check reads one boolean from the device.

    Raises
    ------
    ValueError
        Wrong shape, or a label outside ``[0, C)`` (the message gives the range found).
    """
    is_hot = labels_are_one_hot(xp, t)
    check_label_shape(y.shape, t.shape, is_hot)
    if check_range and not is_hot:
        _check_range(xp, t, y.shape[1])
    return is_hot


def labels_are_one_hot(xp: Any, t: Any) -> bool:
    """``True`` for floating (one-hot) labels, ``False`` for integer class indices.

    Raises ``TypeError`` for any other dtype (e.g. boolean).
    """
    if xp.isdtype(t.dtype, "real floating"):
        return True
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"labels must be integers or one-hot floats, got dtype {t.dtype}")
    return False


def check_label_shape(y_shape: tuple[int, ...], t_shape: tuple[int, ...], is_hot: bool) -> None:
    """Raise ``ValueError`` unless labels of shape ``t_shape`` fit scores of shape ``(N, C)``."""
    n, c = y_shape
    if is_hot:
        if tuple(t_shape) != (n, c):
            raise ValueError(
                f"one-hot labels must have the scores' shape {(n, c)}, got {tuple(t_shape)}"
            )
    elif tuple(t_shape) != (n,):
        raise ValueError(
            f"integer labels must have shape ({n},) to match {n} score rows, got "
            f"{tuple(t_shape)}; pass class indices, or one-hot labels of shape {(n, c)}"
        )


def _check_range(xp: Any, t: Any, c: int) -> None:
    """Raise ``ValueError`` unless every integer label is in ``[0, c)`` (one device read)."""
    if t.shape[0] and bool(xp.any((t < 0) | (t >= c))):
        lo, hi = int(xp.min(t)), int(xp.max(t))
        raise ValueError(
            f"labels out of range: found values in [{lo}, {hi}] but there are {c} classes "
            f"(valid labels are 0..{c - 1})"
        )


def one_hot(t: Any, num_classes: int, dtype: Any = None, *, check: bool = True) -> Any:
    """One-hot encode integer labels ``t`` of shape ``(N,)`` into ``(N, num_classes)``.

    ``dtype`` defaults to the namespace's default floating dtype.  With ``check`` (default),
    labels outside ``[0, num_classes)`` raise ``ValueError`` (one device read); without it
    they give all-zero rows.
    """
    xp = namespace(t)
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {tuple(t.shape)}")
    if check:
        _check_range(xp, t, num_classes)
    classes = xp.arange(num_classes, dtype=t.dtype, device=_device(t))
    hot = t[:, None] == classes[None, :]
    if dtype is None:
        dtype = xp.__array_namespace_info__().default_dtypes(device=_device(t))["real floating"]
    return xp.astype(hot, dtype)


def _as_batch(y: Any, t: Any, xp: Any) -> tuple[Any, Any]:
    """The book treats a single sample (1-D scores) as a batch of one."""
    if y.ndim != 1:
        return y, t
    y = xp.reshape(y, (1, -1))
    # One-hot labels of one sample become (1, C); a 0-d class index becomes (1,).
    t = xp.reshape(t, (1, -1)) if t.ndim == 1 else xp.reshape(t, (1,))
    return y, t


def cross_entropy_error(y: Any, t: Any, *, check: bool = True) -> Any:
    """Mean cross-entropy ``-sum(t * log(y)) / N`` of probabilities ``y`` against labels ``t``.

    Parameters
    ----------
    y : array
        Floating, of shape ``(N, C)`` or ``(C,)``: probabilities (e.g. softmax output).
        A zero probability of the true class gives a large but finite loss (``log`` of
        the dtype's smallest normal number): no warning, and no ``+1e-7`` bias on every
        other probability.
    t : array
        Integer class indices of shape ``(N,)``, or one-hot labels of shape ``(N, C)``.
    check : bool
        Validate label shape and range (one device read for integer labels).

    Returns
    -------
    array
        0-d, of ``y``'s library and dtype.  For logits use :func:`log_softmax` or
        :class:`xprop.layers.SoftmaxWithLoss`, which never take ``log(0)``.
    """
    xp = namespace(y, t)
    require_float(xp, y, "probabilities y")
    y, t = _as_batch(y, t, xp)
    is_hot = check_labels(xp, y, t) if check else xp.isdtype(t.dtype, "real floating")
    target = t if is_hot else one_hot(t, y.shape[1], y.dtype, check=False)
    tiny = xp.finfo(y.dtype).smallest_normal
    return -xp.sum(target * xp.log(xp.maximum(y, tiny))) / y.shape[0]


def mean_squared_error(y: Any, t: Any) -> Any:
    """Half the summed squared error per sample: ``0.5 * sum((y - t)**2) / N``.

    For a single sample (1-D ``y``) ``N`` is 1, which is the book's ``mean_squared_error``
    exactly; for a batch ``(N, ...)`` it is averaged over the ``N`` samples.  Derivative
    with respect to ``y``: ``(y - t) / N``.  Returns a 0-d array.
    """
    return squared_error_parts(y, t)[0]


def squared_error_parts(y: Any, t: Any) -> tuple[Any, Any, int]:
    """``(loss, y - t, N)`` of :func:`mean_squared_error`: what its backward pass needs too.

    Raises ``TypeError`` for non-floating ``y`` and ``ValueError`` when the shapes differ.
    """
    xp = namespace(y, t)
    require_float(xp, y, "predictions y")
    if tuple(y.shape) != tuple(t.shape):
        raise ValueError(
            f"targets must have the predictions' shape {tuple(y.shape)}, got {tuple(t.shape)}"
        )
    n = y.shape[0] if y.ndim > 1 else 1
    diff = y - t
    # xp.asarray: NumPy reductions give a NumPy scalar; callers get a 0-d array everywhere.
    return xp.asarray(0.5 * xp.sum(diff * diff) / n), diff, n
