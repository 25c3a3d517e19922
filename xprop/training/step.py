"""Training steps: the protocol every step follows, and the eager step, the book's loop body.

A training step is the body of the book's loop: ``grads = net.gradient(x, t)``, then
``optimizer.update(net.params, grads)``.  ``net.compile_step(optimizer)`` returns the
fastest way the network's library offers to run it over and over
(:func:`xprop.training.compile.compile_step`; each library class names its kind,
``ArrayLibrary.step_kind``):

- :class:`EagerStep` (NumPy, CuPy, array-api-strict, PyTorch on the CPU): the loop body as
  it is, which already reads nothing from the device;
- :class:`~xprop.training.jit.JitStep` (JAX): the step compiled with ``jax.jit``, an epoch
  as one ``lax.scan``;
- :class:`~xprop.training.cuda_graph.CudaGraphStep` (PyTorch on CUDA): the step captured
  once as a CUDA graph and replayed.

All have the same two calls, so a training loop (the
:class:`~xprop.training.trainer.Trainer`) is written once, and compute the same numbers.
"""

from __future__ import annotations

import numbers
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from xprop._labels import as_label_dtype, label_dtype
from xprop._namespace import namespace
from xprop.backend import get_backend
from xprop.checks import check_label_range, check_label_shape, labels_are_one_hot
from xprop.optimizers import SGD, Optimizer
from xprop.typing import Array

__all__ = [
    "DataParallelStep",
    "EagerStep",
    "LabelCheck",
    "TrainStep",
    "as_optimizer",
    "check_rows",
    "loop_body",
]


class TrainStep(Protocol):
    """What ``net.compile_step(optimizer)`` returns.

    ``step(x, t)`` runs one training step on the batch ``(x, t)`` and returns its loss
    (before the update) as a 0-d array, left on the device.  ``step.run(x, t, index_rows,
    on_step=None)`` runs one step per row of ``index_rows`` (an integer array ``(k, B)``, on
    the host or the device) on ``take(x, row)`` and ``take(t, row)``, and returns the ``k``
    losses as an array ``(k,)``; ``on_step(loss)`` is called as soon as each step is made,
    with its loss (a 0-d array; or the ``(k,)`` losses of steps made together), so a run
    that an exception (Ctrl-C) stops has said which steps it made.  Both check the labels
    before they train (``run``: all of ``t``, once).  ``step.kind`` names the path
    (``"eager"``, ``"book loop"``, ``"jax.jit"``, ``"torch CUDA graph"``); ``step.net`` and
    ``step.optimizer`` are what it trains with.  The optimizer's hyperparameters are read at
    every call (a learning-rate schedule works); its ``iter`` counts the steps.  The
    network's own settings (layer shapes, Dropout's ratio, BatchNorm's momentum, weight
    decay) are part of what a compiled step compiles: build a new step after changing them.
    """

    kind: str
    net: Any
    optimizer: Any

    def __call__(self, x: Array, t: Array) -> Array: ...

    def run(
        self, x: Array, t: Array, index_rows: Array, on_step: Callable[[Array], None] | None = None
    ) -> Array: ...


class EagerStep:
    """The training step as it is, where nothing compiles it.

    ``book=True`` (the ``Trainer``'s ``compiled=False``): the book's loop body line by
    line, ``grads = net.gradient(x, t)`` then ``optimizer.update(net.params, grads)``,
    for any object with ``params`` and ``gradient(x, t)`` and any optimizer with
    ``update``; its loss is the one the gradient's forward pass computed
    (``net.last_loss``) where it keeps one, else, as in the book, ``net.loss(x, t)``
    after the update.  Otherwise (``net.compile_step(optimizer)`` where the library
    compiles nothing: NumPy, CuPy, array-api-strict, PyTorch on the CPU) the body the
    compiled steps run, :func:`loop_body`, after the optimizer's checks
    (:meth:`~xprop.optimizers.Optimizer.prepare`, before any work).  The same numbers up
    to rounding.  ``backend`` says where ``run``'s host index rows go (default:
    ``net.backend``, else the selected backend).
    """

    kind = "eager"  # "book loop" with book=True

    def __init__(
        self, net: Any, optimizer: Optimizer | float, backend: Any = None, *, book: bool = False
    ) -> None:
        has_update = callable(getattr(optimizer, "update", None))  # the book's protocol
        self.net = net
        # An Optimizer, or any object with the book's update(params, grads).
        self.optimizer: Any = optimizer if has_update else as_optimizer(optimizer)
        self.backend = get_backend(backend or getattr(net, "backend", None))
        # run() checks all its labels first, by the loss layer's rules (a network's)
        self.labels = LabelCheck(net) if hasattr(net, "last_layer") else None
        #: The book's loop body line by line, or :func:`loop_body` (which needs a Network
        #: and an xprop optimizer).
        compiled_body = hasattr(net, "param_layers") and isinstance(self.optimizer, Optimizer)
        self.book = book or not compiled_body
        self.kind = "book loop" if self.book else "eager"

    def gradient(self, x: Array, t: Array) -> Mapping[str, Array]:
        """The gradients the update takes (:class:`DataParallelStep` averages them)."""
        grads: Mapping[str, Array] = self.net.gradient(x, t)
        return grads

    def __call__(self, x: Array, t: Array) -> Array:
        net, opt = self.net, self.optimizer
        if not self.book:  # the body the compiled steps run, checked before any work
            state = opt.prepare(net.params)
            loss = loop_body(net, opt, state, opt.lr, opt.iter + 1, x, t)
            opt.iter += 1
            return loss
        grads = self.gradient(x, t)  # the book's loop body: gradient, then update
        loss = getattr(net, "last_loss", None)
        opt.update(net.params, grads)
        return net.loss(x, t) if loss is None else loss

    def run(
        self, x: Array, t: Array, index_rows: Array, on_step: Callable[[Array], None] | None = None
    ) -> Array:
        """One step per row of ``index_rows``; the losses as an array ``(k,)``."""
        xp = namespace(x)
        rows = check_rows(self.backend, x, t, index_rows)
        if self.labels is not None:
            self.labels(x, t)
        made = []
        for i in range(rows.shape[0]):
            row = rows[i, ...]
            made.append(self(xp.take(x, row, axis=0), xp.take(t, row, axis=0)))
            if on_step is not None:
                on_step(made[-1])
        if made:
            return xp.stack(made)
        like = next(iter(self.net.params.values()))
        return xp.zeros((0,), dtype=like.dtype, device=self.backend.device)


class DataParallelStep(EagerStep):
    """The eager step of one rank of a data-parallel run (:mod:`xprop.distributed`).

    Each rank computes the gradient of its slice of the global batch; the ranks average
    them (``dp``, a :class:`~xprop.distributed.DataParallel` made from ``comm`` if need be)
    before the update, which is then the global batch's.  Made by the ``Trainer``, which
    passes its ``settings``: every setting that fixes how many collectives a rank makes
    (ranks that differ would wait for each other forever), its ``"seed"`` and whether
    it was asked to compile.  They are compared between the ranks with the optimizer's
    class and hyperparameters (one ``allgather``) before anything else; then every rank
    takes rank 0's parameters (a shape or dtype that differs is named), and the network's
    configuration and weight decay are compared (ranks that differ would train a hybrid).
    A difference raises :class:`~xprop.distributed.DistributedError` on every rank, naming
    each rank's value.  ``seed`` and ``local_batch`` are the run's: without a seed, rank 0
    draws one for all (every rank must draw the same minibatch indices).
    """

    def __init__(self, net: Any, optimizer: Any, comm: Any, settings: dict[str, Any]) -> None:
        from xprop.distributed import DataParallel

        super().__init__(net, optimizer, book=True)  # the gradients averaged before the update
        if settings.get("compiled"):
            raise ValueError(
                "compiled=True with comm=: data-parallel training runs the eager step (the "
                "ranks average their gradients between the gradient and the update); leave "
                "compiled unset or pass compiled=False"
            )
        self.dp = comm if isinstance(comm, DataParallel) else DataParallel(comm)
        why = (
            "(every rank passes the whole data set and the same arguments: the ranks draw "
            "the same minibatch indices and each computes its slice of them, so a shard of "
            "the data per rank does not work)"
        )
        opt = self.optimizer
        optimizer = [type(opt).__name__, getattr(opt, "hyperparameters", dict)()]
        self.dp.check_equal({**settings, "optimizer": optimizer}, f"Trainer's settings {why}")
        self.local_batch = self.dp.local_batch_size(settings["mini_batch_size"])
        self.seed = settings["seed"]
        if self.seed is None and self.dp.size > 1:
            self.seed = self.dp.comm.bcast(secrets.randbits(63), root=0)
        # Every rank starts from rank 0's parameters (a shape or dtype that differs is named
        # here); then the settings that change no shape but the arithmetic must agree too.
        self.dp.broadcast_params(net.params)
        network = {
            "class": type(net).__name__,
            **getattr(net, "_checkpoint_config", dict)(),
            "weight_decay_lambda": getattr(net, "weight_decay_lambda", None),
        }
        self.dp.check_equal({"network": network}, f"network's settings {why}")

    def gradient(self, x: Array, t: Array) -> Mapping[str, Array]:
        return self.dp.average_gradients(self.net.gradient(x, t))

    def accuracy(self, x: Array, t: Array) -> float:
        """The network's accuracy on ``x``, each rank scoring its share (the same result on
        every rank), with BatchNorm's statistics first averaged over the ranks (each rank's
        are those of its slices)."""
        stats: dict[str, Any] = getattr(self.net, "running_stats", dict)()
        if stats:
            self.net.set_running_stats(
                self.dp.average_arrays(stats, "BatchNorm running statistics")
            )
        return self.dp.accuracy(self.net, x, t)


def loop_body(
    net: Any,
    optimizer: Optimizer,
    state: dict[str, dict[str, Array]],
    lr: float | Array,
    it: int | Array,
    x: Array,
    t: Array,
) -> Array:
    """The book's loop body on ``(x, t)``: backpropagation, then the optimizer's update.

    What every compiled step runs (eagerly, traced by ``jax.jit``, captured in a CUDA
    graph): ``grads = net.gradient(x, t)``, then ``optimizer.apply(net.params, grads,
    state, lr, it)`` (the update's formulas, in mixed precision for float16),
    ``net.params`` and ``state`` changed in place where arrays are mutable, rebound where
    not.  Plain SGD without state (no float16 masters) backpropagates the learning rate
    instead of 1 (:meth:`~xprop.nets.network.Network.scaled_gradient`), so every gradient
    comes out as ``lr * grad`` and the update is a subtraction: one multiply per parameter
    fewer, the same update up to rounding.  Returns the loss (0-d, before the update).
    """
    params = net.params
    if type(optimizer) is SGD and not state:
        grads = net.scaled_gradient(x, t, lr)  # lr * grad: the update is a subtraction
        for key in params:
            params[key] -= grads[key]
    else:
        optimizer.apply(params, net.gradient(x, t), state, lr, it)
    return net.last_loss


def as_optimizer(optimizer: Any) -> Optimizer:
    """An :mod:`xprop.optimizers` instance; a learning rate means plain ``SGD(lr)``."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, numbers.Real) and not isinstance(optimizer, bool):
        # SGD checks the learning rate, any real number (cast: SGD's lr is typed float).
        return SGD(cast(float, optimizer))
    raise TypeError(
        f"compile_step takes an optimizer of xprop.optimizers (e.g. Adam(lr=0.001)) or a "
        f"learning rate for plain SGD, got {type(optimizer).__name__} {optimizer!r}"
    )


def check_rows(backend: Any, x: Array, t: Array, index_rows: Array) -> Array:
    """The index rows a ``run`` trains on, checked, on ``backend``'s device.

    ``index_rows`` must be a 2-D integer array with every index in ``[0, len(x))``:
    checked where it lies (host indices, as a NumPy array, cost no device read), then put
    on the device (one copy for the run).  ``x`` and ``t`` must have as many samples.
    """
    try:  # the rows' own library: host indices are checked where they are
        ns = namespace(index_rows)
    except TypeError:  # a list: put it on the device first
        index_rows = backend.asarray(index_rows)
        ns = namespace(index_rows)
    shape = tuple(index_rows.shape)
    if len(shape) != 2 or not ns.isdtype(index_rows.dtype, "integral"):
        raise ValueError(
            f"index_batches must be an integer array (k, B) of minibatch indices, one row "
            f"per step, got {index_rows.dtype} of shape {shape}"
        )
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but t has {t.shape[0]} labels")
    n = x.shape[0]
    if shape[0] and shape[1]:
        # Free for host indices; for indices on an accelerator, a read once per run.
        lo, hi = int(ns.min(index_rows)), int(ns.max(index_rows))
        if lo < 0 or hi >= n:
            raise IndexError(
                f"index_batches holds indices in [{lo}, {hi}] but x has {n} samples "
                f"(valid indices are 0..{n - 1})"
            )
    return index_rows if ns is namespace(x) else backend.asarray(index_rows)


class LabelCheck:
    """The labels of a compiled step, checked before it runs: a compiled program cannot
    raise on data.

    The loss layer's own rules (:mod:`xprop.checks`): the labels' shape against the batch
    and, when the network's loss layer checks labels, their range (one device read per
    call, as the eager step's loss layer makes).  The number of classes is the network's
    ``output_size``, else the width of its scores for one sample (one forward pass, once).
    """

    def __init__(self, net: Any) -> None:
        self.net = net
        self.classes: int | None = None

    def __call__(self, x: Array, t: Array) -> None:
        net = self.net
        xp = namespace(t)  # host labels are fine: the compiled program copies them
        if self.classes is None:
            size = getattr(net, "output_size", None)
            self.classes = size if isinstance(size, int) else net.predict(x[:1, ...]).shape[-1]
        is_hot = labels_are_one_hot(xp, t)
        check_label_shape((x.shape[0], self.classes), tuple(t.shape), is_hot, "logits")
        if not is_hot and getattr(net.last_layer, "check_labels", False):
            c = self.classes
            check_label_range(xp, as_label_dtype(xp, t, label_dtype(xp, t, c)), c)
