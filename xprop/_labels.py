"""Labels: what kind they are, whether their shapes fit the scores, the dtype to compare in.

One set of rules for every place labels enter — :class:`~xprop.nn.layers.SoftmaxWithLoss`,
:func:`~xprop.nn.functions.cross_entropy_error`, :func:`~xprop.nn.functions.one_hot`,
:func:`~xprop.nn.functions.validate_labels` and ``TwoLayerNet.accuracy``: integer class
indices of any integer dtype, or one-hot rows of any floating dtype.  Shape checks use host
values only; the range check is the one device read, and says what to do when it cannot
happen (inside ``jax.jit``).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from xprop._constants import class_range
from xprop._namespace import isdtype, require_array, require_float
from xprop.libraries import library_for

__all__ = [
    "as_label_dtype",
    "batch_labels",
    "check_label_range",
    "check_label_shape",
    "check_scores_shape",
    "label_dtype",
    "labels_are_one_hot",
    "one_hot_targets",
    "read_labels",
]


def labels_are_one_hot(xp: Any, t: Any) -> bool:
    """``True`` for floating (one-hot) labels, ``False`` for integer class indices.

    Raises ``TypeError`` for any other dtype (e.g. boolean).
    """
    if isdtype(xp, t.dtype, "real floating"):
        return True
    if not isdtype(xp, t.dtype, "integral"):
        raise TypeError(
            f"labels must be integer class indices or one-hot floats, got dtype {t.dtype}"
        )
    return False


def check_scores_shape(shape: tuple[int, ...], what: str = "scores") -> None:
    """Raise ``ValueError`` unless ``shape`` is ``(N, C)`` or ``(C,)`` with ``C >= 1``."""
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{what} must have shape (N, C) for a batch or (C,) for one sample, got shape "
            f"{shape}"
            + (
                "; flatten the leading axes first, e.g. xp.reshape(y, (-1, C))"
                if len(shape) > 2
                else "; a single number has no classes to choose from"
            )
        )
    if shape[-1] == 0:
        raise ValueError(f"{what} of shape {shape} have no classes (C = 0)")


def check_label_shape(
    y_shape: tuple[int, ...], t_shape: tuple[int, ...], is_hot: bool, what: str = "scores"
) -> None:
    """Raise ``ValueError`` unless labels of ``t_shape`` fit scores of ``y_shape``.

    Scores are ``(N, C)`` with ``N >= 1`` (the mean over no samples is undefined), or
    ``(C,)`` for one sample, whose label is a class index of shape ``()`` or ``(1,)``, or a
    one-hot row ``(C,)`` (the book treats one sample as a batch of one).  Integer labels of
    a batch are ``(N,)``; one-hot labels have the scores' shape.  Host values only: no
    device read.  The messages name the shapes found and expected.
    """
    check_scores_shape(y_shape, what)
    if len(y_shape) == 1:
        (c,) = y_shape
        if is_hot and t_shape != (c,):
            raise ValueError(
                f"one-hot labels for one sample ({what} of shape ({c},)) must have shape "
                f"({c},), got {t_shape}"
            )
        if not is_hot and t_shape not in ((), (1,)):
            raise ValueError(
                f"the integer label of one sample ({what} of shape ({c},)) must be one class "
                f"index of shape () or (1,), got shape {t_shape}; for a batch pass {what} of "
                f"shape (N, {c})"
            )
        return
    n, c = y_shape
    if n == 0:
        raise ValueError(
            f"empty batch: {what} of shape {y_shape}; the mean over no samples is undefined, "
            "pass at least one sample"
        )
    if is_hot:
        if t_shape != (n, c):
            hint = (
                "; floating labels are read as one-hot rows: pass class indices as integers "
                "(e.g. backend.asarray(labels) of an integer NumPy array)"
                if len(t_shape) == 1
                else ""
            )
            raise ValueError(
                f"one-hot labels must have the {what}' shape {(n, c)}, got {t_shape}" + hint
            )
    elif t_shape != (n,):
        raise ValueError(
            f"integer labels must have shape ({n},) to match {n} rows of {what}, got "
            f"{t_shape}; pass class indices, or one-hot labels of shape {(n, c)}"
        )


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


def check_label_range(xp: Any, t: Any, c: int) -> None:
    """Raise ``ValueError`` unless every integer label is in ``[0, c)`` (one device read).

    ``t`` must be in a dtype that holds ``c - 1`` (:func:`label_dtype`).
    """
    if not t.shape[0]:
        return
    # t > c - 1 rather than t >= c: c itself may not fit t's dtype (uint8 labels, c = 256).
    if read_labels(xp, xp.any((t < 0) | (t > c - 1)), t):
        lo, hi = int(xp.min(t)), int(xp.max(t))
        raise ValueError(
            f"labels out of range: found values in [{lo}, {hi}] but there are {c} classes "
            f"(valid labels are 0..{c - 1})"
        )


def read_labels(xp: Any, value: Any, t: Any) -> int:
    """``int(value)``: the one device read of a label check, with a clear error if traced.

    Inside ``jax.jit`` (or a CUDA-graph capture) nothing can be read from the device; the
    library's own error (a ``ConcretizationTypeError`` on JAX) does not say what to do.
    """
    try:
        return int(value)
    except Exception as exc:
        if not library_for(xp).is_tracing(t):
            raise
        raise TypeError(
            "the label range check reads the labels from the device, which a traced or "
            "compiled program (jax.jit, a CUDA graph) cannot do; pass check_labels=False "
            "(and validate the labels once before training with "
            "xprop.validate_labels(t, num_classes)), or train with net.compile_step(lr)"
        ) from exc


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
