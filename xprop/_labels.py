"""Labels as the loss computes with them: one-hot rows in the scores' dtype, or class
indices in an integer dtype that holds every class.

The rules labels must meet (their kind, their shape against the scores, their range) live
in :mod:`xprop.checks`; this module applies them where labels enter a loss and encodes the
labels for it, caching per kind of input what takes microseconds to decide.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from xprop._constants import class_range
from xprop.checks import (
    check_label_range,
    check_label_shape,
    check_scores_shape,
    labels_are_one_hot,
    read_labels,
    require_array,
    require_float,
)

__all__ = ["as_label_dtype", "batch_labels", "label_dtype", "one_hot_targets"]


def batch_labels(xp: Any, y: Any, t: Any, is_hot: bool, what: str = "scores") -> tuple[Any, Any]:
    """Scores ``y`` and labels ``t`` as a batch ``(N, C)``, after :func:`check_label_shape`.

    One sample (scores ``(C,)``) becomes a batch of one.
    """
    check_label_shape(tuple(y.shape), tuple(t.shape), is_hot, what)
    if y.ndim == 1:
        c = y.shape[0]
        return xp.reshape(y, (1, c)), xp.reshape(t, (1, c) if is_hot else (1,))
    return y, t


def label_dtype(xp: Any, t: Any, num_classes: int) -> Any:
    """The integer dtype in which labels ``t`` are compared with ``arange(num_classes)``.

    ``t``'s own dtype when it is signed and holds ``num_classes - 1`` (no cast: the usual
    case, int64 or int32 labels), else the namespace's default integer dtype on ``t``'s
    device (int64; int32 on JAX without 64-bit mode).  ``arange(300)`` in uint8 would wrap
    around and match two classes; unsigned labels are always compared as signed ones, which
    every library supports (PyTorch has no ``arange`` or ``<`` for uint16 to uint64), and a
    huge unsigned label that wraps around in the cast becomes negative: still out of range.

    Raises ``ValueError`` when no integer dtype there holds ``num_classes - 1``.
    """
    try:
        key = (id(xp), t.dtype, num_classes)
        found = _LABEL_DTYPES.get(key)
    except TypeError:  # a dtype without a hash
        key, found = None, None
    if found is None:
        found = _widest_needed(xp, t, num_classes)
        if key is not None:
            if len(_LABEL_DTYPES) > 256:
                _LABEL_DTYPES.clear()
            _LABEL_DTYPES[key] = found
    return found


_LABEL_DTYPES: dict[tuple[Any, Any, int], Any] = {}  # xp.iinfo takes microseconds


def _widest_needed(xp: Any, t: Any, num_classes: int) -> Any:
    top = num_classes - 1
    info = xp.iinfo(t.dtype)
    if info.min < 0 and info.max >= top:
        return t.dtype
    wide = xp.__array_namespace_info__().default_dtypes(device=_device(t))["integral"]
    if xp.iinfo(wide).max >= top:
        return wide
    raise ValueError(
        f"{num_classes} classes: class indices up to {top} do not fit the widest integer "
        f"dtype here ({wide}); use fewer classes"
    )


def as_label_dtype(xp: Any, t: Any, dtype: Any) -> Any:
    """``t`` in integer ``dtype`` (:func:`label_dtype`), cast only when it differs."""
    return t if t.dtype == dtype else xp.astype(t, dtype)


def one_hot_targets(xp: Any, y: Any, t: Any, *, check_range: bool) -> tuple[Any, Any]:
    """Scores ``y`` as a batch ``(N, C)`` and labels ``t`` as one-hot rows in ``y``'s dtype.

    What a loss layer needs from its inputs, every check included: ``y`` a floating array
    ``(N, C)`` (or ``(C,)``, one sample, made a batch of one); ``t`` integer class indices
    or one-hot rows that fit it (:func:`check_label_shape`).  With ``check_range``, integer
    labels outside ``[0, C)`` raise ``ValueError`` (one device read: the count of hits);
    without it they become all-zero rows.
    """
    try:  # what the labels are (and that both are arrays of the right kinds), once per kind
        key = (type(y), y.dtype, y.shape[-1:], type(t), t.dtype)
        kind = _TARGET_KINDS.get(key)
    except (AttributeError, TypeError):  # not arrays, or an unhashable dtype
        key, kind = None, None
    if kind is None:
        kind = _target_kind(xp, y, t)
        if key is not None:
            if len(_TARGET_KINDS) > 256:
                _TARGET_KINDS.clear()
            _TARGET_KINDS[key] = kind
    is_hot, dtype = kind
    y, t = batch_labels(xp, y, t, is_hot, "logits")
    if is_hot:  # float64 labels must not turn float32 maths float64
        return y, t if t.dtype == y.dtype else xp.astype(t, y.dtype)
    n, c = y.shape
    t = as_label_dtype(xp, t, dtype)
    hot = t[:, None] == class_range(xp, t, c, dtype)
    # A label outside [0, C) leaves its row all False: one count finds it (one device
    # read), cheaper than comparing the labels with both ends of the range.
    if check_range and read_labels(xp, xp.count_nonzero(hot), t) != n:
        check_label_range(xp, t, c)  # raises, naming the range of labels found
    return y, xp.astype(hot, y.dtype)


# (scores type, dtype, classes, labels type, dtype) -> (one-hot?, compare dtype): checked
_TARGET_KINDS: dict[tuple[Any, ...], tuple[bool, Any]] = {}


def _target_kind(xp: Any, y: Any, t: Any) -> tuple[bool, Any]:
    """Check that ``y`` holds floating scores and ``t`` labels; (one-hot?, compare dtype)."""
    require_array(y, "logits x")
    require_array(t, "labels t")
    require_float(xp, y, "logits x")
    check_scores_shape(tuple(y.shape), "logits")
    is_hot = labels_are_one_hot(xp, t)
    return is_hot, None if is_hot else label_dtype(xp, t, y.shape[-1])
