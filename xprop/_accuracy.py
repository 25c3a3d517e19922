"""Classification accuracy of a network's scores, validated as the loss validates labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xprop._labels import as_label_dtype, label_dtype
from xprop._namespace import namespace
from xprop.checks import (
    check_count,
    check_label_range,
    check_label_shape,
    labels_are_one_hot,
    require_array,
)

__all__ = ["accuracy"]


def accuracy(
    predict: Callable[[Any], Any],
    x: Any,
    t: Any,
    *,
    check_labels: bool,
    batch_size: int = 10000,
) -> float:
    """Fraction of the samples of ``x`` whose arg-max score ``predict(x)`` is the label.

    ``t`` holds integer labels ``(N,)`` or one-hot labels ``(N, C)``, validated as the
    loss validates them (``C`` from the scores): shapes always, the range of integer labels
    with ``check_labels`` (one more device read).  ``x`` is scored in chunks of
    ``batch_size`` rows to bound memory; one device read at the end.

    Raises ``ValueError`` for an empty batch, labels of the wrong shape or width, or
    (checked) out of range; ``TypeError``/``ValueError`` for a ``batch_size`` that is not an
    integer of at least 1.
    """
    batch_size = check_count(batch_size, "batch_size")
    xp = namespace(x, t)
    require_array(x, "inputs x")
    require_array(t, "labels t")
    if x.ndim < 2:
        raise ValueError(f"accuracy needs a batch of inputs (N, ...), got shape {tuple(x.shape)}")
    n: int = x.shape[0]
    if n == 0:
        raise ValueError("accuracy of an empty batch is undefined; pass at least one sample")
    is_hot = labels_are_one_hot(xp, t)
    labels: Any = None  # arrays, once the first chunk is scored
    correct: Any = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores = predict(x[start:stop, ...])
        if labels is None:
            # The labels against the scores the network produces, (N, C): as the loss does.
            c = scores.shape[-1]
            check_label_shape((n, c), tuple(t.shape), is_hot, "scores")
            if is_hot:
                labels = xp.argmax(t, axis=1)
            else:
                labels = as_label_dtype(xp, t, label_dtype(xp, t, c))
                if check_labels:
                    check_label_range(xp, labels, c)
        y = xp.argmax(scores, axis=1)
        # In the labels' dtype, which holds every class index: no wrap-around.
        hits = xp.count_nonzero(xp.astype(y, labels.dtype, copy=False) == labels[start:stop])
        correct = hits if correct is None else correct + hits
    return float(correct) / n
