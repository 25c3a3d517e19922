"""Activation and loss functions of the book (ch. 3-4), numerically stable, on any backend.

Every function infers its array namespace from its inputs and returns arrays of the same
library, on the same device, in the input's floating dtype.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from xprop._constants import class_range, smallest_normal, zero
from xprop._labels import as_label_dtype, batch_labels, label_dtype
from xprop._namespace import namespace, resolve_dtype
from xprop.checks import (
    check_count,
    check_flag,
    check_label_range,
    labels_are_one_hot,
    require_array,
    require_float,
)
from xprop.typing import Array

__all__ = [
    "cross_entropy_error",
    "log_softmax",
    "mean_squared_error",
    "one_hot",
    "relu",
    "sigmoid",
    "softmax",
    "validate_labels",
]


def sigmoid(x: Array) -> Array:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise; derivative ``y * (1 - y)``.

    Computed from ``e = exp(-|x|)``, which never overflows (no warning at ``x = ±1000``):
    ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0``, so small results keep
    full relative precision too (``sigmoid(-40)`` is ``4.2e-18``, not 0).
    """
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    r = 1.0 / (1.0 + e)
    return xp.where(x >= 0, r, e * r)


def relu(x: Array) -> Array:
    """Rectified linear unit ``max(x, 0)``, elementwise; derivative 1 where ``x > 0``, else 0."""
    xp = namespace(x)
    return xp.maximum(x, zero(xp, x))


def softmax(x: Array) -> Array:
    """Softmax over the last axis, for any leading dimensions: ``exp(x) / sum(exp(x))``.

    The row maximum is subtracted first, so logits of ``1e4`` give finite results.
    Shape and dtype are those of ``x``.
    """
    xp = namespace(x)
    z = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return z / xp.sum(z, axis=-1, keepdims=True)


def log_softmax(x: Array) -> Array:
    """``log(softmax(x))`` over the last axis, exact and finite for any finite logits.

    ``z - log(sum(exp(z)))`` with ``z`` max-shifted: no ``log(0)`` and no ``+1e-7`` bias.
    """
    xp = namespace(x)
    z = x - xp.max(x, axis=-1, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))


def validate_labels(t: Array, num_classes: int) -> bool:
    """Check a whole set of labels once; ``True`` if they are one-hot, ``False`` if indices.

    Integer labels (any integer dtype) must have shape ``(N,)`` and values in
    ``[0, num_classes)``; floating labels are one-hot rows of shape ``(N, num_classes)``.
    Costs one device read.  Validate a data set with it once, then train with
    ``check_labels=False``: no device read per step, and nothing for ``jax.jit`` to trip on.

    Raises
    ------
    TypeError
        Labels that are not an array, of another dtype (e.g. boolean), or a
        ``num_classes`` that is not an integer.
    ValueError
        Wrong shape, ``num_classes < 1``, or a label outside ``[0, num_classes)`` (the
        message gives the range found).
    """
    xp = namespace(t)
    require_array(t, "labels t")
    c = check_count(num_classes, "num_classes")
    is_hot = labels_are_one_hot(xp, t)
    if is_hot and (t.ndim != 2 or t.shape[1] != c):
        raise ValueError(
            f"one-hot labels must have shape (N, {c}), got {tuple(t.shape)}"
            + ("; class indices must be integers" if t.ndim == 1 else "")
        )
    if not is_hot:
        if t.ndim != 1:
            raise ValueError(f"integer labels must have shape (N,), got {tuple(t.shape)}")
        check_label_range(xp, as_label_dtype(xp, t, label_dtype(xp, t, c)), c)
    return is_hot


def one_hot(t: Array, num_classes: int, dtype: Any = None, *, check_labels: bool = True) -> Array:
    """One-hot encode integer labels ``t`` of shape ``(N,)`` into ``(N, num_classes)``.

    ``t`` may have any integer dtype (uint8 labels and 300 classes work).  ``dtype`` is a
    dtype of ``t``'s library or its name (``"float64"``); default: the namespace's default
    floating dtype.  With ``check_labels`` (default), labels outside ``[0, num_classes)``
    raise ``ValueError`` (one device read); without it they give all-zero rows.

    Raises
    ------
    TypeError
        ``t`` not of an integer dtype (floating labels are already one-hot), ``num_classes``
        not an integer, or an unknown ``dtype``.
    ValueError
        ``t`` not 1-D, ``num_classes < 1``, or (checked) a label out of range.
    """
    xp = namespace(t)
    require_array(t, "labels t")
    c = check_count(num_classes, "num_classes")
    check_flag(check_labels, "check_labels")
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(
            f"one_hot takes integer class indices, got dtype {t.dtype}; convert the labels "
            "to integers (floating labels of shape (N, C) are already one-hot)"
        )
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {tuple(t.shape)}")
    if dtype is None:
        dtype = xp.__array_namespace_info__().default_dtypes(device=_device(t))["real floating"]
    else:
        dtype = resolve_dtype(xp, dtype, "one_hot")
    compare = label_dtype(xp, t, c)
    t = as_label_dtype(xp, t, compare)
    if check_labels:
        check_label_range(xp, t, c)
    return xp.astype(t[:, None] == class_range(xp, t, c, compare)[None, :], dtype)


def cross_entropy_error(y: Array, t: Array, *, check_labels: bool = True) -> Array:
    """Mean cross-entropy ``-sum(t * log(y)) / N`` of probabilities ``y`` against labels ``t``.

    Parameters
    ----------
    y : array
        Floating, of shape ``(N, C)`` or ``(C,)``: probabilities (e.g. softmax output).
        A zero probability of the true class gives a large but finite loss (``log`` of
        the dtype's smallest normal number): no warning, and no ``+1e-7`` bias on every
        other probability.
    t : array
        Integer class indices of shape ``(N,)`` (any integer dtype), or one-hot labels of
        shape ``(N, C)`` (any floating dtype; cast to ``y``'s).  For one sample (``y`` of
        shape ``(C,)``): a class index of shape ``()`` or ``(1,)``, or one-hot ``(C,)``.
    check_labels : bool
        Also check that integer labels lie in ``[0, C)`` (one device read).  Shapes are
        always checked.

    Returns
    -------
    array
        0-d, of ``y``'s library and dtype.  For logits use :func:`log_softmax` or
        :class:`xprop.nn.layers.SoftmaxWithLoss`, which never take ``log(0)``.

    Raises
    ------
    TypeError
        Non-floating ``y``, labels of a non-numeric dtype, non-arrays.
    ValueError
        Wrong shapes, an empty batch, or (checked) a label out of range.
    """
    xp = namespace(y, t)
    require_array(y, "probabilities y")
    require_array(t, "labels t")
    require_float(xp, y, "probabilities y")
    check_flag(check_labels, "check_labels")
    is_hot = labels_are_one_hot(xp, t)
    y, t = batch_labels(xp, y, t, is_hot, "probabilities")
    if is_hot:
        target = t if t.dtype == y.dtype else xp.astype(t, y.dtype)
    else:
        target = one_hot(t, y.shape[1], y.dtype, check_labels=check_labels)
    # A cached 0-d floor, not a Python float: array-api-compat would turn the float into a
    # new device array at every call (a blocking copy on CUDA, illegal in a CUDA graph).
    tiny = smallest_normal(xp, y)
    return -xp.sum(target * xp.log(xp.maximum(y, tiny))) / y.shape[0]


def mean_squared_error(y: Array, t: Array) -> Array:
    """Half the summed squared error per sample: ``0.5 * sum((y - t)**2) / N``.

    For a single sample (1-D ``y``) ``N`` is 1, which is the book's ``mean_squared_error``
    exactly; for a batch ``(N, ...)`` it is averaged over the ``N`` samples.  Derivative
    with respect to ``y``: ``(y - t) / N``.  Returns a 0-d array.  ``t`` must have ``y``'s
    shape (its dtype follows ``y``'s); an empty ``y`` raises ``ValueError``.
    """
    return squared_error_parts(y, t)[0]


def squared_error_parts(y: Array, t: Array) -> tuple[Array, Array, int]:
    """``(loss, y - t, N)`` of :func:`mean_squared_error`: what its backward pass needs too.

    Targets of another dtype are cast to ``y``'s.  Raises ``TypeError`` for non-floating
    ``y`` and ``ValueError`` when the shapes differ or are empty.
    """
    xp = namespace(y, t)
    require_array(y, "predictions y")
    require_array(t, "targets t")
    require_float(xp, y, "predictions y")
    if tuple(y.shape) != tuple(t.shape):
        raise ValueError(
            f"targets must have the predictions' shape {tuple(y.shape)}, got {tuple(t.shape)}"
        )
    if 0 in tuple(y.shape):
        raise ValueError(
            f"empty predictions of shape {tuple(y.shape)}: the mean squared error of no "
            "values is undefined; pass at least one sample"
        )
    if t.dtype != y.dtype:
        t = xp.astype(t, y.dtype)  # targets follow the predictions' dtype, like labels
    n = y.shape[0] if y.ndim > 1 else 1
    diff = y - t
    # xp.asarray: NumPy reductions give a NumPy scalar; callers get a 0-d array everywhere.
    return xp.asarray(0.5 * xp.sum(diff * diff) / n), diff, n
