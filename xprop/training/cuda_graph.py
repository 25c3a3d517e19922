"""The PyTorch CUDA training step: the book's loop body captured as a CUDA graph.

At the book's size a step is some 35 kernels of a few microseconds of work each, and
launching them costs more than running them; a CUDA graph captures the launches once and
replays them all with one.  A graph reads and writes fixed memory, so everything a step
reads or writes lives in tensors the graph keeps: the parameters and the optimizer's state
(updated in place, the same tensors as ``net.params``), the BatchNorm statistics (copied
into static tensors at the end of each step), the learning rate and the update count
(0-d tensors the host sets when they change; the count is incremented by the graph), the
Dropout keys, and the batch (copied into static inputs, or gathered inside the graph from a
static index row).  A graph holds addresses, not references: every tensor it reads that was
made before its capture (the replica's layers, xprop's cached constants such as the
Dropout element indices, the data of ``run``) is kept alive with it, since memory freed
under a graph is handed out again and the graph would read someone else's numbers.
Nothing in a captured step reads the device or copies host data: the labels are checked
before the graph runs, never inside (at every call, when the network checks labels).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from xprop import _constants
from xprop.optimizers import Optimizer
from xprop.training.compiled import (
    draw_keys,
    random_layers,
    replica,
    scalar_dtype,
    set_buffers,
    use_keys,
)
from xprop.training.step import LabelCheck, as_optimizer, check_rows, loop_body
from xprop.typing import Array

__all__ = ["CudaGraphStep", "StepCaptureError"]


class StepCaptureError(RuntimeError):
    """Capturing a training step as a CUDA graph failed; the message says what to do."""


class CudaGraphStep:
    """The training step captured once per batch shape as a CUDA graph, then replayed.

    Warm-up runs on a side stream first (as PyTorch requires) and everything it changed is
    restored afterwards, so compiling never changes the training result; an error there is
    the eager step's own (a bad batch, say) and is raised as it is.  The graphs are
    captured anew when ``net.params`` or the optimizer's state hold other tensors than those
    captured (compared by identity; the step keeps the captured tensors alive, so an
    identity cannot be reused), or when a hyperparameter other than the learning rate
    changes.  At most :attr:`max_graphs` graphs are kept (least recently used dropped).
    """

    kind = "torch CUDA graph"
    warmup_steps = 3
    max_graphs = 8

    def __init__(self, net: Any, optimizer: Optimizer | float) -> None:
        import torch

        self.net, self.optimizer = net, as_optimizer(optimizer)
        self._torch = torch
        be = net.backend
        self._device = be.device
        self.labels = LabelCheck(net)
        self._random = random_layers(net)  # Dropout layers: their keys are inputs
        self._graphs: OrderedDict[tuple[Any, ...], tuple[Any, ...]] = OrderedDict()
        self._captured: tuple[Any, ...] = ()  # every tensor the graphs read and write
        self._hyper: dict[str, float] | None = None
        # float32 for float16 parameters (mixed precision: see xprop.optimizers)
        self._lr = torch.zeros((), dtype=scalar_dtype(be), device=be.device)
        self._it = torch.zeros((), dtype=scalar_dtype(be), device=be.device)
        self._lr_value: float | None = None
        self._it_value: int | None = None
        n = max(len(self._random), 1)
        self._keys = torch.zeros((n, 2), dtype=torch.int32, device=be.device)
        # The static BatchNorm statistics: a dict of tensors once _prepare has run (before
        # any capture), None until then.
        self._buffers: Any = None

    # -- what the graphs read -----------------------------------------------------------------

    def _current(self) -> dict[str, dict[str, Array]]:
        """Make the static inputs hold the values the host has; forget stale graphs."""
        net, opt = self.net, self.optimizer
        state = opt.prepare(net.params)
        buffers = net.running_stats()
        missing = sorted(key for key, value in buffers.items() if value is None)
        if missing:  # a graph reads and writes fixed tensors: they must exist first
            raise ValueError(
                f"{type(net).__name__}'s running statistics {missing} do not exist yet (a "
                "BatchNormalization built with running_mean=None makes them on its first "
                "forward pass); pass zeros of the feature count when building the layer, or "
                "run net.predict(x) once before the first compiled step"
            )
        if self._buffers is None or buffers.keys() != self._buffers.keys():
            self._buffers = {k: v.clone() for k, v in buffers.items()}
            self._graphs.clear()
        for key, value in buffers.items():
            if value is not self._buffers[key]:  # set from outside: take its values
                self._buffers[key].copy_(value)
        net.set_running_stats(self._buffers)
        tensors = (*net.params.values(), *(a for slot in state.values() for a in slot.values()))
        hyper = opt.hyperparameters()
        hyper.pop("lr", None)
        if (
            hyper != self._hyper
            or len(tensors) != len(self._captured)
            or any(a is not b for a, b in zip(tensors, self._captured, strict=True))
        ):
            self._graphs.clear()
            self._captured, self._hyper = tensors, hyper
        if opt.lr != self._lr_value:
            self._lr.fill_(opt.lr)
            self._lr_value = opt.lr
        if opt.iter + 1 != self._it_value:
            self._it.fill_(opt.iter + 1)
            self._it_value = opt.iter + 1
        return state

    def _set_keys(self, keys: Any) -> None:
        """Dropout keys ``(L, 2)`` from the host, one fill each: no host-to-device copy."""
        for j in range(len(keys)):
            for i in range(2):
                self._keys[j, i].fill_(keys[j][i])

    def _stepped(self) -> None:
        self.optimizer.iter += 1
        self._it_value = self.optimizer.iter + 1  # the graph incremented its own count

    def _graph(self, key: tuple[Any, ...], capture: Any) -> tuple[Any, ...]:
        entry = self._graphs.get(key)
        if entry is None:
            entry = capture()
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return entry

    # -- the two calls ------------------------------------------------------------------------

    def __call__(self, x: Array, t: Array) -> Array:
        self.labels(x, t)  # before the graph, never inside (one device read)
        state = self._current()
        key = ("step", tuple(x.shape), x.dtype, tuple(t.shape), t.dtype)
        graph, static_x, static_t, loss, _ = self._graph(
            key, lambda: self._capture_step(x, t, state)
        )
        static_x.copy_(x)
        static_t.copy_(t)
        keys = draw_keys(self.net, self._random, 1)
        if keys is not None:
            self._set_keys(keys[0])
        graph.replay()
        self._stepped()
        return loss.clone()  # the graph overwrites its own loss at the next replay

    def run(
        self, x: Array, t: Array, index_rows: Array, on_step: Callable[[Array], None] | None = None
    ) -> Array:
        """Steps on ``take(x, index_rows[i])`` for each row ``i``; their losses, ``(k,)``.

        The gather runs inside the graph, from a static index row; ``x`` and ``t`` are read
        where they lie, and the graph keeps them (a new ``x`` or ``t`` captures anew).
        """
        torch = self._torch
        index_batches = check_rows(self.net.backend, x, t, index_rows)
        self.labels(x, t)
        state = self._current()
        steps, batch = int(index_batches.shape[0]), int(index_batches.shape[1])
        if steps == 0:  # nothing to run, nothing to capture
            return torch.empty(0, dtype=self._lr.dtype, device=self._device)
        key = ("run", id(x), id(t), batch)
        entry = self._graphs.get(key)
        if entry is not None and (entry[3] is not x or entry[4] is not t):
            del self._graphs[key]  # an id reused by another array (cannot be while kept)
        graph, static_idx, loss, *_ = self._graph(
            key, lambda: self._capture_run(x, t, index_batches[0], state)
        )
        keys = draw_keys(self.net, self._random, steps)
        if keys is not None:
            keys = self.net.backend.asarray(keys, dtype="int32")  # one copy for the run
        made = torch.empty(steps, dtype=loss.dtype, device=loss.device)
        for i in range(steps):
            static_idx.copy_(index_batches[i])
            if keys is not None:
                self._keys.copy_(keys[i])
            graph.replay()
            made[i] = loss
            self._stepped()
            if on_step is not None:
                on_step(made[i])
        return made

    # -- capture ------------------------------------------------------------------------------

    def _body(self, state: dict[str, dict[str, Array]]) -> tuple[Any, Any]:
        """One step on a replica of the network, the way the graph will run it; the replica.

        The replica must live as long as the graph: its layers hold what the warm-up made
        and the capture reads (the Dropout layers' index arrays).
        """
        net, opt = self.net, self.optimizer
        twin = replica(net)
        use_keys(twin, self._random, self._keys)  # Dropout: device masks, static keys

        def body(x: Array, t: Array) -> Array:
            set_buffers(twin, self._buffers)
            loss = loop_body(twin, opt, state, self._lr, self._it, x, t)
            for key, value in twin.running_stats().items():
                self._buffers[key].copy_(value)
            self._it += 1
            return loss

        return body, twin

    def _capture_step(
        self, x: Array, t: Array, state: dict[str, dict[str, Array]]
    ) -> tuple[Any, ...]:
        static_x, static_t = x.clone(), t.clone()
        body, twin = self._body(state)
        graph, loss, kept = self._capture(lambda: body(static_x, static_t))
        return graph, static_x, static_t, loss, (twin, kept)

    def _capture_run(
        self, x: Array, t: Array, first_idx: Array, state: dict[str, dict[str, Array]]
    ) -> tuple[Any, ...]:
        torch = self._torch
        static_idx = first_idx.clone()
        body, twin = self._body(state)

        def step() -> Any:
            return body(torch.index_select(x, 0, static_idx), torch.index_select(t, 0, static_idx))

        graph, loss, kept = self._capture(step)
        return graph, static_idx, loss, x, t, (twin, kept)

    def _capture(self, step: Any) -> tuple[Any, Any, tuple[Any, ...]]:
        """The graph of ``step()``, its loss, and the cached constants it may read.

        xprop's constants (:mod:`xprop._constants`: ones vectors, ReLU's zero, ``arange(C)``)
        that the capture read come from a cache that may drop them at any time (it is
        cleared when full); those made during the capture are the graph's own.  So the
        cache's arrays as they are at the end of the capture are kept with the graph.
        """
        torch = self._torch
        saved = [a.clone() for a in (*self._captured, *self._buffers.values(), self._it)]
        live = [*self._captured, *self._buffers.values(), self._it]

        def restore() -> None:  # warm-up steps must not count as training
            for a, b in zip(live, saved, strict=True):
                a.copy_(b)

        with torch.cuda.device(self._device):
            previous = torch.cuda.current_stream()
            side = torch.cuda.Stream()
            side.wait_stream(previous)
            try:
                with torch.cuda.stream(side):
                    for _ in range(self.warmup_steps):
                        step()  # eager: its errors are the eager step's, raised as they are
            finally:
                previous.wait_stream(side)
                restore()
            graph = torch.cuda.CUDAGraph()
            failure: BaseException | None = None
            try:
                with torch.cuda.graph(graph):
                    try:
                        loss = step()
                    except Exception as exc:  # the capture is broken: end it, then say why
                        failure = exc
            except Exception as exc:  # capture_end of a broken capture raises again
                failure = failure or exc
            finally:
                # torch.cuda.graph leaves the capture stream current when capture_end raises
                torch.cuda.set_stream(previous)
            if failure is not None:
                restore()
                raise StepCaptureError(
                    f"capturing the training step as a CUDA graph failed "
                    f"({type(failure).__name__}: {failure}); a captured step must not read "
                    "the device (int(), float(), .item(), bool() of a tensor) nor copy host "
                    "data; train with compiled=False, or report this with `python -m xprop "
                    "info`"
                ) from failure
        return graph, loss, tuple(_constants._CACHE.values())
