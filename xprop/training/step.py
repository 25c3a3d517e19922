"""Training steps: the protocol, the one step function, and the eager step.

``net.compile_step(optimizer)`` returns the fastest way the network's library offers to run
one training step — forward, backward, the optimizer's update — over and over:

- JAX: :class:`~xprop.training.jit.JitStep`, ``jax.jit`` with the parameters, optimizer
  state and BatchNorm statistics passed in and out, an epoch as one ``lax.scan``;
- PyTorch on CUDA: :class:`~xprop.training.cuda_graph.CudaGraphStep`, the step captured
  once as a CUDA graph and replayed;
- everything else (NumPy, CuPy, array-api-strict, PyTorch on the CPU): :class:`EagerStep`,
  the step as it is, which already reads nothing from the device.

Each library class says which of these fits it (``ArrayLibrary.step_kind``), and
:func:`xprop.training.compile.compile_step` builds it; all of them
run the one function :func:`apply_step`, so they compute the same numbers, and have the
same two calls, so a training loop is written once.  Compiled steps draw Dropout masks on
the device, from keys drawn ahead from the network's generator in the order the eager path
with ``device_masks=True`` draws them: the same masks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import MutableMapping
from typing import Any, Protocol

from array_api_compat import device as device_of

from xprop._namespace import namespace
from xprop.optimizers import SGD, Optimizer

__all__ = [
    "EagerStep",
    "TrainStep",
    "apply_step",
    "as_optimizer",
    "check_labels",
    "check_learning_rate",
    "check_network",
    "check_run_inputs",
    "draw_keys",
    "eager_step",
    "random_layers",
    "sgd",
]


class TrainStep(Protocol):
    """What ``net.compile_step(optimizer)`` returns.

    ``step(x, t)`` runs one training step on the batch ``(x, t)`` and returns its loss
    (before the update) as a 0-d array, left on the device.  ``step.run(x, t,
    index_batches)`` runs one step per row of ``index_batches`` (an integer array ``(k, B)``
    on the device), on ``take(x, row)`` and ``take(t, row)``, and returns the ``k`` losses as
    an array ``(k,)``.  ``step.kind`` names the path (``"eager"``, ``"jax.jit"``,
    ``"torch CUDA graph"``); ``step.net`` and ``step.optimizer`` are what it trains with.
    The optimizer's hyperparameters are read at every call (a learning-rate schedule
    works); its ``iter`` counts the steps.  The network's own settings (layer shapes,
    Dropout's ratio, BatchNorm's momentum, weight decay) are part of what a compiled step
    compiles: build a new step after changing them.
    """

    kind: str
    net: Any
    optimizer: Any

    def __call__(self, x: Any, t: Any) -> Any: ...

    def run(self, x: Any, t: Any, index_batches: Any) -> Any: ...


def apply_step(
    net: Any,
    optimizer: Optimizer,
    params: MutableMapping[str, Any],
    state: Any,
    lr: Any,
    it: Any,
    x: Any,
    t: Any,
) -> Any:
    """One training step of ``net`` on ``(x, t)``: the loss (0-d), ``params`` updated.

    Backpropagation, then ``optimizer.step(params, grads, state, lr, it)``.  With plain
    SGD the learning rate is backpropagated instead of 1 (every gradient comes out as
    ``lr * grad``) and subtracted: one multiply per parameter fewer, the same update up to
    rounding.  ``params`` must be the dict ``net`` reads; ``params``, ``state`` and
    ``net``'s buffers are updated in place where arrays are mutable, rebound where not.
    """
    if type(optimizer) is SGD:
        grads = net.backprop(x, t, lr)
        for key in params:
            params[key] -= grads[key]
    else:
        grads = net.backprop(x, t)
        optimizer.step(params, grads, state, lr, it)
    return net.last_loss


def eager_step(net: Any, optimizer: Optimizer, x: Any, t: Any) -> Any:
    """:func:`apply_step` on the network's own ``params`` and the optimizer's own state.

    ``prepare`` checks the parameters before anything is computed; the step is counted
    once it is done (a step that raises, e.g. on a bad label, is not counted).
    """
    state = optimizer.prepare(net.params)
    it = optimizer.iter + 1
    loss = apply_step(net, optimizer, net.params, state, optimizer.lr, it, x, t)
    optimizer.iter = it
    return loss


class EagerStep:
    """:func:`eager_step` called as it is: the step where nothing compiles it."""

    kind = "eager"

    def __init__(self, net: Any, optimizer: Optimizer | float) -> None:
        self.net, self.optimizer = net, as_optimizer(optimizer)
        self._checked_labels: list[Any] = []  # label arrays validated already (kept alive)

    def __call__(self, x: Any, t: Any) -> Any:
        return eager_step(self.net, self.optimizer, x, t)

    def run(self, x: Any, t: Any, index_batches: Any) -> Any:
        """One step per row of ``index_batches``; the losses as an array ``(k,)``."""
        xp = namespace(x)
        index_batches = check_run_inputs(self.net, x, t, index_batches, self._checked_labels)
        if not index_batches.shape[0]:  # no rows, no steps
            params = next(iter(self.net.params.values()))
            return xp.zeros((0,), dtype=params.dtype, device=device_of(params))
        losses = []
        for i in range(index_batches.shape[0]):
            idx = index_batches[i, ...]
            losses.append(self(xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)))
        return xp.stack(losses)


def check_network(net: Any) -> None:
    """Raise ``TypeError`` unless ``net`` follows the network model a step trains.

    That is :class:`xprop.nets.network.Network`'s protocol: ``params``, ``backend``,
    ``backprop``, ``last_loss``, ``running_stats``/``set_running_stats`` and ``replica``.
    """
    missing = [
        name
        for name in ("params", "backend", "backprop", "running_stats", "set_running_stats")
        if not hasattr(net, name)
    ]
    if missing:
        raise TypeError(
            f"{type(net).__name__} cannot be trained by a compiled step: it lacks "
            f"{', '.join(missing)}; build it on xprop.nets.network.Network (params, layers "
            "and last_layer in __init__), or train it with Trainer(..., compiled=False)"
        )


def as_optimizer(optimizer: Any) -> Optimizer:
    """An :mod:`xprop.optimizers` instance; a learning rate means plain ``SGD(lr)``."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, numbers.Real) and not isinstance(optimizer, bool):
        return sgd(optimizer)
    raise TypeError(
        f"compile_step takes an optimizer of xprop.optimizers (e.g. Adam(lr=0.001)) or a "
        f"learning rate for plain SGD, got {type(optimizer).__name__} {optimizer!r}"
    )


def sgd(lr: Any) -> SGD:
    """``SGD(lr)`` with ``lr`` checked by :func:`check_learning_rate`."""
    return SGD(check_learning_rate(lr))


def check_learning_rate(lr: Any) -> float:
    """``lr`` as a Python float; ``TypeError``/``ValueError`` unless a finite positive number."""
    if type(lr) is float and 0.0 < lr < math.inf:
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(
            f"the learning rate must be a real number, got {type(lr).__name__} {lr!r}; "
            "pass e.g. lr=0.1"
        )
    lr = float(lr)  # a NumPy float too, but never a 0-d array mixed into the maths
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be finite and positive, got {lr!r}")
    return float(lr)


def random_layers(net: Any) -> list[Any]:
    """The layers of ``net`` that draw random masks (Dropout), in forward order."""
    return [layer for layer in net.layers.values() if callable(getattr(layer, "draw_keys", None))]


def draw_keys(layers: list[Any], steps: int) -> list[list[list[int]]] | None:
    """The mask keys of ``steps`` training steps for ``layers``: host integers, nested
    ``[step][layer][2]``, drawn from each layer's generator in the order the eager path
    draws them (step by step, layer by layer); ``None`` without such layers.  A step puts
    them on the device with ``backend.asarray(keys, dtype="int32")``."""
    if not layers:
        return None
    return [[[int(k) for k in layer.draw_keys()] for layer in layers] for _ in range(steps)]


def check_run_inputs(net: Any, x: Any, t: Any, index_batches: Any, checked: list[Any]) -> Any:
    """What a compiled ``run`` checks before it starts (nothing can raise inside it).

    ``index_batches`` must be a 2-D integer array with every index in ``[0, len(x))``:
    checked where it lies (host indices, as a NumPy array, cost no device read; they are
    then copied to the device once).
    When the network checks labels, the labels ``t`` are validated once per array
    (:func:`xprop.validate_labels`, one device read), ``checked`` keeping the arrays already
    validated.  Returns the index rows on the device.
    """
    xp = namespace(x)
    try:  # the indices' own library: host indices (NumPy) are checked where they are
        ns = namespace(index_batches)
    except TypeError:  # a list: put it on the device first
        index_batches, ns = net.backend.asarray(index_batches), xp
    shape = tuple(index_batches.shape)
    if len(shape) != 2 or not ns.isdtype(index_batches.dtype, "integral"):
        raise ValueError(
            f"index_batches must be an integer array (k, B) of minibatch indices, one row "
            f"per step, got {index_batches.dtype} of shape {shape}"
        )
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but t has {t.shape[0]} labels")
    n = x.shape[0]
    if shape[0] and shape[1]:
        # Free for host indices; for indices on an accelerator, a read once per run.
        lo, hi = int(ns.min(index_batches)), int(ns.max(index_batches))
        if lo < 0 or hi >= n:
            raise IndexError(
                f"index_batches holds indices in [{lo}, {hi}] but x has {n} samples "
                f"(valid indices are 0..{n - 1})"
            )
    if ns is not xp:
        index_batches = net.backend.asarray(index_batches)  # one copy for the run
    if not any(t is seen for seen in checked):
        check_labels(net, t)
        checked.append(t)
        del checked[:-4]  # a few data sets at most; the arrays are kept alive
    return index_batches


def check_labels(net: Any, t: Any) -> None:
    """Validate labels ``t`` (:func:`xprop.validate_labels`) when the network checks labels.

    A compiled program cannot raise on data, so a compiled step checks its labels before
    it runs, never inside: one device read, as the eager step's loss layer makes.
    """
    from xprop.nn.functions import validate_labels

    classes = getattr(net, "output_size", None)
    if classes is not None and getattr(net.last_layer, "check_labels", False):
        validate_labels(t, classes)
