"""Training steps: the eager step, and the protocol that compiled steps follow.

``net.compile_step(lr)`` asks the network's array library (:mod:`xprop.libraries`) for the
fastest way to run ``net.train_step(x, t, lr)`` over and over:

- JAX: ``jax.jit`` with the parameters passed in and out (:class:`xprop.libraries.jax.JitStep`),
  and a whole epoch as one ``lax.scan``;
- PyTorch on CUDA: the step captured once as a CUDA graph and replayed
  (:class:`xprop.libraries.torch.CudaGraphStep`);
- everything else (NumPy, CuPy, array-api-strict, PyTorch on the CPU): :class:`EagerStep`,
  the step as it is, which already reads nothing from the device.

Every step object has the same two calls, so a training loop is written once.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol

from xprop._namespace import namespace

__all__ = ["EagerStep", "TrainStep", "check_learning_rate"]


class TrainStep(Protocol):
    """What ``net.compile_step(lr)`` returns.

    ``step(x, t)`` runs one SGD step on the batch ``(x, t)`` and returns its loss (before the
    update) as a 0-d array, left on the device.  ``step.run(x, t, index_batches)`` runs one
    step per row of ``index_batches`` (an integer array ``(k, B)`` on the device), on
    ``take(x, row)`` and ``take(t, row)``, and returns the ``k`` losses as an array ``(k,)``.
    ``step.kind`` names the path (``"eager"``, ``"jax.jit"``, ``"torch CUDA graph"``).
    """

    kind: str

    def __call__(self, x: Any, t: Any) -> Any: ...

    def run(self, x: Any, t: Any, index_batches: Any) -> Any: ...


class EagerStep:
    """``net.train_step(x, t, lr)`` called as it is: the step where nothing compiles it."""

    kind = "eager"

    def __init__(self, net: Any, lr: float) -> None:
        self.net, self.lr = net, lr

    def __call__(self, x: Any, t: Any) -> Any:
        return self.net.train_step(x, t, self.lr)

    def run(self, x: Any, t: Any, index_batches: Any) -> Any:
        """One step per row of ``index_batches``; the losses as an array ``(k,)``."""
        xp = namespace(x, t, index_batches)
        losses = []
        for i in range(index_batches.shape[0]):
            idx = index_batches[i, ...]
            losses.append(self(xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)))
        return xp.stack(losses)


def check_learning_rate(lr: Any) -> float:
    """``lr`` as a Python float; ``TypeError``/``ValueError`` unless a finite positive number."""
    if type(lr) is float and 0.0 < lr < math.inf:
        return lr  # the usual case, checked at every train_step: keep it cheap
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(
            f"the learning rate must be a real number, got {type(lr).__name__} {lr!r}; "
            "pass e.g. lr=0.1"
        )
    lr = float(lr)  # a NumPy float too, but never a 0-d array mixed into the maths
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be finite and positive, got {lr!r}")
    return float(lr)
