"""The PyTorch CUDA-graph step, tested without a GPU through a stand-in for graph capture.

:class:`~xprop.training.cuda_graph.CudaGraphStep` only runs where there is a CUDA device,
which CI does not have.  The fixture ``cuda`` (its ``"stand-in"`` case) runs it on CPU
tensors with ``torch.cuda``'s streams and graphs replaced by :class:`FakeCuda`, which keeps
the rules of a real capture that the step's correctness depends on:

- **Capture records, replay re-runs.**  Inside ``torch.cuda.graph(g)`` a
  ``TorchDispatchMode`` records every ATen op with its arguments; ``g.replay()`` runs the
  recorded ops again, in order, on the *same memory*: an op's fresh result is copied into
  the tensor recorded at capture (fixed addresses, as a graph's private pool), in-place
  ops write their arguments again, views and allocations run no kernel and are skipped.
  Python runs once, at capture: Python numbers (a hyperparameter, ``opt.iter``) are frozen
  into the graph, and a replay sees only what lies in memory.
- **Capture runs nothing.**  A real capture launches no kernel, so it must not change the
  training state.  The recorder executes each op (so that the Python code can go on), but
  saves every storage from before the capture before its first write and restores it at
  ``capture_end``; the graph's own memory is then filled with ``0xff`` bytes (NaN, ``-1``)
  as a real pool holds garbage until the first replay.  A step that trained during capture
  would be one step ahead of the eager path; one that read a capture-time result without a
  replay would read NaN.
- **No host reads, no host data.**  While capturing, ``aten._local_scalar_dense``
  (``item()``, ``int()``, ``float()``, ``bool()`` of a tensor) and ``aten.lift_fresh`` /
  ``lift_fresh_copy`` (host data made a tensor: ``torch.tensor(0.0)``, ``torch.asarray`` of a
  number, array-api-compat's conversion of a Python scalar argument such as in
  ``xp.maximum(x, 0.0)``) raise CUDA's "operation not permitted when stream is capturing";
  so do ``Tensor.item/__int__/__float__/__bool__/__index__/cpu/numpy/tolist``,
  ``torch.asarray/tensor/as_tensor`` of anything but a tensor, ``torch.from_numpy`` and
  ``torch.cuda.synchronize``.  As in CUDA the capture is then invalidated: every later op
  fails and ``capture_end`` raises again.  ``aten.scalar_tensor`` is allowed: on CUDA it is
  ``empty().fill_(value)``, a kernel with the number as argument, legal in a capture.
- **A graph holds addresses, not tensors.**  Memory from before the capture is referenced
  weakly (its storage); a replay that reads a storage freed since the capture raises,
  where a real graph would silently read whatever the allocator put there since.  The
  graph's own results stay alive with it (its pool).
- **Streams.**  ``torch.cuda.graph`` is written as PyTorch's is: it makes its capture
  stream current, and when ``capture_end`` raises it leaves that stream current; a capture
  on the default stream is refused, as PyTorch refuses it.
- ``TorchLibrary.is_tracing`` answers whether a capture is under way (a CPU tensor is never
  ``is_cuda``), so xprop's constants cache behaves as on a GPU.

What the stand-in cannot see: copies between host and device hidden inside a torch op
(every tensor here is a CPU tensor, so a CPU scalar tensor mixed into device maths looks
like any other), stream ordering and races (everything runs in program order), the
allocator's reuse of freed memory (caught as a read of a freed storage instead), cuBLAS
and kernel behaviour, and errors CUDA raises only in the driver.  Where a CUDA device is
present, the ``"cuda"`` case runs the same tests on the real thing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import xprop
from xprop import _constants
from xprop.libraries.torch import TorchLibrary
from xprop.nn.layers import Relu
from xprop.optimizers import SGD, Adam, Momentum
from xprop.training.cuda_graph import CudaGraphStep, StepCaptureError
from xprop.training.step import EagerStep

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten, tree_map  # noqa: E402

aten = torch.ops.aten

NOT_PERMITTED = "CUDA error: operation not permitted when stream is capturing"
INVALIDATED = "CUDA error: operation failed due to a previous error during capture"

#: A device value read on the host: ``item()``, ``int()``, ``float()``, ``bool()``.
HOST_READS = frozenset({aten._local_scalar_dense.default})
#: Host data made a device tensor (on CUDA a blocking host-to-device copy).
HOST_DATA = frozenset({aten.lift_fresh.default, aten.lift_fresh_copy.default})
#: Allocations run no kernel: nothing to replay.
ALLOCATIONS = frozenset(
    {
        aten.empty.memory_format,
        aten.empty_like.default,
        aten.empty_strided.default,
        aten.new_empty.default,
        aten.new_empty_strided.default,
    }
)
#: Factories that read only the shape of their tensor argument, not its memory.
SHAPE_ONLY = frozenset(
    {
        aten.zeros_like.default,
        aten.ones_like.default,
        aten.full_like.default,
        aten.new_zeros.default,
        aten.new_ones.default,
        aten.new_full.default,
    }
)


# -- the stand-in -------------------------------------------------------------------------------


def _tensors(tree: Any) -> list[Any]:
    return [a for a in tree_flatten(tree)[0] if isinstance(a, torch.Tensor)]


def _results(func: Any, out: Any) -> list[tuple[Any, Any]]:
    """``(tensor, its return's schema)`` for each tensor an op returned, in order."""
    returns = func._schema.returns
    values = out if len(returns) > 1 else (out,)
    return [(t, ret) for ret, v in zip(returns, values, strict=True) for t in _tensors(v)]


def _written(func: Any, args: tuple, kwargs: dict) -> list[Any]:
    """The tensors an op writes (its ``Tensor(a!)`` arguments)."""
    found = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        found += _tensors(value)
    return found


@dataclass(frozen=True)
class _Memory:
    """A tensor as a graph holds it: an address and a layout, fixed at capture.

    The graph's own memory (its pool) is held strongly; memory from before the capture
    weakly (``weak``), as a real graph holds a raw address.  The layout is read when the op
    is recorded: a later in-place view op (``squeeze_``) changes the tensor, not the graph.
    """

    storage: Any
    weak: bool
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    device: Any

    def tensor(self, op: Any) -> Any:
        storage = self.storage() if self.weak else self.storage
        if storage is None:
            raise RuntimeError(
                f"stand-in CUDA graph: {op} reads a {self.dtype} tensor of shape "
                f"{self.shape} whose memory was freed after the capture (a real graph "
                "would read whatever the allocator put there since): keep every tensor a "
                "graph reads alive as long as the graph"
            )
        out = torch.empty(0, dtype=self.dtype, device=self.device)
        return out.set_(storage, self.offset, self.shape, self.stride)


@dataclass(frozen=True)
class _Shape:
    """A tensor argument read for its shape only."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    device: Any

    def tensor(self, op: Any) -> Any:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)


def _shape_of(a: Any) -> Any:
    if not isinstance(a, torch.Tensor):
        return a
    return _Shape(tuple(a.shape), a.stride(), a.dtype, a.device)


def _materialize(op: Any) -> Callable[[Any], Any]:
    def get(a: Any) -> Any:
        return a.tensor(op) if isinstance(a, (_Memory, _Shape)) else a

    return get


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: FakeGraph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.graph._dispatch(func, args, kwargs or {})


class FakeStream:
    """A CUDA stream: only its identity matters (everything runs in program order)."""

    def __init__(self, cuda: FakeCuda, name: str = "side") -> None:
        self.cuda, self.name = cuda, name

    def wait_stream(self, stream: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def synchronize(self) -> None:
        self.cuda.host_access("Stream.synchronize()")

    def query(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<FakeStream {self.name}>"


class FakeStreamContext:
    """``torch.cuda.stream(s)``: ``s`` current inside, the previous stream after."""

    def __init__(self, cuda: FakeCuda, stream: Any) -> None:
        self.cuda, self.stream = cuda, stream

    def __enter__(self) -> None:
        self.previous = self.cuda.current
        if self.stream is not None:
            self.cuda.current = self.stream

    def __exit__(self, *exc: object) -> None:
        self.cuda.current = self.previous


class FakeGraphContext:
    """``torch.cuda.graph(g)``, written as PyTorch writes it (``torch/cuda/graphs.py``).

    ``__exit__`` calls ``capture_end()`` first: when that raises, the capture stream stays
    current, as with PyTorch.
    """

    def __init__(
        self,
        cuda: FakeCuda,
        cuda_graph: FakeGraph,
        pool: Any = None,
        stream: Any = None,
        capture_error_mode: str = "global",
        **kwargs: Any,
    ) -> None:
        if stream is None and cuda.capture_stream is None:
            cuda.capture_stream = FakeStream(cuda, "capture")
        self.cuda = cuda
        self.stream_ctx = FakeStreamContext(cuda, stream or cuda.capture_stream)
        self.cuda_graph = cuda_graph

    def __enter__(self) -> None:
        self.cuda.synchronize()
        self.stream_ctx.__enter__()
        self.cuda_graph.capture_begin()

    def __exit__(self, *exc: object) -> None:
        self.cuda_graph.capture_end()
        self.stream_ctx.__exit__(*exc)


class FakeGraph:
    """``torch.cuda.CUDAGraph``: capture records ATen ops, replay runs them on fixed memory."""

    def __init__(self, cuda: FakeCuda, keep_graph: bool = False) -> None:
        self.cuda = cuda
        cuda.graphs.append(weakref.ref(self))
        self._ops: list[tuple[Any, Any, Any, list[Any]]] | None = None
        self._began = False
        self._broken: str | None = None

    # -- capture ---------------------------------------------------------------------------

    def capture_begin(self, pool: Any = None, capture_error_mode: str = "global", **kw: Any):
        cuda = self.cuda
        if cuda.capturing is not None:
            raise RuntimeError("stand-in: a capture is already under way")
        if self._began:
            raise RuntimeError("stand-in: this CUDAGraph was captured already")
        if cuda.current is cuda.default_stream:
            raise RuntimeError(
                "CUDA graphs must be captured on a non-default stream. (However, after "
                "capture, it's ok to replay them on the default stream.)"
            )
        cuda.captures += 1
        self._began, self._stream = True, cuda.current
        self._log: list[tuple[Any, tuple, dict, Any]] = []
        self._storages: dict[int, tuple[Any, bool]] = {}  # id -> (storage, the graph's own)
        self._saved: dict[int, tuple[Any, Any]] = {}  # outside storages written: their values
        cuda.capturing = self
        self._mode = _Recorder(self)
        self._mode.__enter__()

    def invalidate(self, what: str) -> None:
        """What CUDA does on an illegal call in a capture: raise, and break the capture."""
        if self._broken is None:
            self._broken = what
        raise RuntimeError(f"{NOT_PERMITTED} (stand-in: {what})")

    def _register(self, tensors: list[Any], own: bool) -> None:
        for t in tensors:
            storage = t.untyped_storage()
            self._storages.setdefault(id(storage), (storage, own))

    def _dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if self._broken is not None:
            raise RuntimeError(f"{INVALIDATED} (stand-in: {func} after {self._broken})")
        if func in HOST_READS:
            self.invalidate(f"{func} reads a device value on the host")
        if func in HOST_DATA:
            self.invalidate(f"{func} copies host data to the device")
        self._register(_tensors((args, kwargs)), own=False)
        writes = _written(func, args, kwargs)
        for t in writes:
            storage = t.untyped_storage()
            key = id(storage)
            if not self._storages[key][1] and key not in self._saved:
                self._saved[key] = (storage, storage.clone())
        if func in SHAPE_ONLY:
            held = tree_map(_shape_of, (args, kwargs))
        else:
            held = tree_map(self._hold, (args, kwargs))  # the layout before the op
        out = func(*args, **kwargs)
        results = _results(func, out)
        self._register([t for t, _ in results], own=True)  # new memory: the graph's pool
        if func in ALLOCATIONS or (
            results and not writes and all(ret.alias_info is not None for _, ret in results)
        ):
            return out  # an allocation or a view: no kernel to replay
        targets = [self._hold(t) if ret.alias_info is None else None for t, ret in results]
        self._log.append((func, *held, targets))
        return out

    def _hold(self, a: Any) -> Any:
        if not isinstance(a, torch.Tensor):
            return a
        storage, own = self._storages[id(a.untyped_storage())]
        return _Memory(
            storage if own else weakref.ref(storage),
            not own,
            a.storage_offset(),
            tuple(a.shape),
            a.stride(),
            a.dtype,
            a.device,
        )

    def capture_end(self) -> None:
        cuda = self.cuda
        if cuda.capturing is not self:
            raise RuntimeError("stand-in: capture_end() without capture_begin()")
        if cuda.current is not self._stream:
            raise RuntimeError("Capture must end on the same stream it began on.")
        try:
            self._mode.__exit__(None, None, None)
        finally:
            cuda.capturing = None
        # A capture runs no kernel: undo what the recorder wrote into memory from before it,
        for storage, saved in reversed(self._saved.values()):
            storage.copy_(saved)
        # and the graph's own memory holds garbage until the first replay.
        for storage, own in self._storages.values():
            if own:
                storage.fill_(0xFF)
        log, broken = self._log, self._broken
        del self._log, self._storages, self._saved, self._mode
        if broken is not None:
            raise RuntimeError(f"{INVALIDATED} (stand-in: {broken})")
        self._ops = log

    # -- replay ----------------------------------------------------------------------------

    def replay(self) -> None:
        if self.cuda.capturing is not None:
            raise RuntimeError("stand-in: replay() while a capture is under way")
        if self._ops is None:
            raise RuntimeError("stand-in: replay() of a graph that holds no capture")
        for func, args, kwargs, targets in self._ops:
            get = _materialize(func)
            result = func(*tree_map(get, args), **tree_map(get, kwargs))
            for target, (value, _) in zip(targets, _results(func, result), strict=True):
                if target is not None:
                    get(target).copy_(value)

    def reset(self) -> None:
        self._ops = None


class FakeCuda:
    """``torch.cuda``'s graphs and streams on the CPU; :meth:`install` patches them in."""

    def __init__(self) -> None:
        self.default_stream = FakeStream(self, "default")
        self.current: Any = self.default_stream
        self.capture_stream: Any = None
        self.capturing: FakeGraph | None = None
        self.graphs: list[weakref.ref] = []  # every graph made
        self.captures = 0  # capture_begin calls

    def host_access(self, what: str) -> None:
        if self.capturing is not None:
            self.capturing.invalidate(what)

    def synchronize(self, device: Any = None) -> None:
        self.host_access("torch.cuda.synchronize()")

    def set_stream(self, stream: Any) -> None:
        self.current = stream

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        patch = functools.partial(monkeypatch.setattr, cuda)
        patch("CUDAGraph", functools.partial(FakeGraph, self))
        patch("graph", functools.partial(FakeGraphContext, self))
        patch("Stream", functools.partial(FakeStream, self))
        patch("stream", functools.partial(FakeStreamContext, self))
        patch("current_stream", lambda device=None: self.current)
        patch("set_stream", self.set_stream)
        patch("device", lambda device: contextlib.nullcontext())
        patch("is_current_stream_capturing", lambda: self.capturing is not None)
        patch("synchronize", self.synchronize)
        patch("empty_cache", lambda: None)
        # CPU tensors are never `is_cuda`: xprop asks whether a tensor is being captured
        # (its constants cache must not keep capture-time tensors).
        monkeypatch.setattr(
            TorchLibrary,
            "is_tracing",
            lambda lib, x: bool(torch.compiler.is_compiling()) or self.capturing is not None,
        )
        for name in ("item", "__int__", "__float__", "__bool__", "__index__", "tolist"):
            self._guard(monkeypatch, torch.Tensor, name, "reads a device value on the host")
        for name in ("cpu", "numpy", "__array__"):
            self._guard(monkeypatch, torch.Tensor, name, "copies a device tensor to the host")
        not_a_tensor = lambda obj, *a, **k: not isinstance(obj, torch.Tensor)  # noqa: E731
        for name in ("asarray", "tensor", "as_tensor"):
            self._guard(monkeypatch, torch, name, "copies host data to the device", not_a_tensor)
        self._guard(monkeypatch, torch, "from_numpy", "copies host data to the device")

    def _guard(
        self,
        monkeypatch: pytest.MonkeyPatch,
        owner: Any,
        name: str,
        what: str,
        applies: Callable[..., bool] | None = None,
    ) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.capturing is not None and (applies is None or applies(*args, **kwargs)):
                self.capturing.invalidate(f"{owner.__name__}.{name} {what}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, guarded)

    def live_graphs(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.graphs)


def test_the_stand_in_captures_as_cuda_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in itself: a capture changes nothing, a replay runs the ops again on the
    same memory, a host read breaks the capture, freed memory cannot be read."""
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    a = torch.zeros((2, 2), dtype=torch.float64)
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="non-default stream"):
        graph.capture_begin()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        b = (a + 1.0).T * 2.0  # a fresh result through a view
        a.add_(b)
    assert torch.cuda.current_stream() is cuda.default_stream
    np.testing.assert_array_equal(a.numpy(), np.full((2, 2), 0.0))  # nothing ran
    assert bool(torch.isnan(b).all())  # the graph's memory: garbage until a replay
    graph.replay()
    np.testing.assert_array_equal(b.numpy(), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(a.numpy(), np.full((2, 2), 2.0))
    graph.replay()
    np.testing.assert_array_equal(a.numpy(), np.full((2, 2), 8.0))
    assert cuda.captures == 1
    broken = torch.cuda.CUDAGraph()
    ended = pytest.raises(RuntimeError, match="previous error during capture")
    with ended, torch.cuda.graph(broken):  # capture_end raises: the capture was broken
        with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
            float(a.sum())
        with pytest.raises(RuntimeError, match="previous error during capture"):
            a.add_(1.0)
    assert torch.cuda.current_stream() is cuda.capture_stream  # as PyTorch leaves it
    cuda.set_stream(cuda.default_stream)
    with pytest.raises(RuntimeError, match="holds no capture"):
        broken.replay()
    del a, b
    gc.collect()
    with pytest.raises(RuntimeError, match="memory was freed after the capture"):
        graph.replay()


# -- the fixture: the stand-in, or a real CUDA device ------------------------------------------


@dataclass
class Cuda:
    """Where the graphs run: the stand-in (``fake``) or a real device (``fake`` is None)."""

    backend: xprop.Backend
    fake: FakeCuda | None
    counter: dict[str, Any]

    @property
    def captures(self) -> int:
        return self.fake.captures if self.fake else self.counter["captures"]

    def live_graphs(self) -> int:
        if self.fake:
            return self.fake.live_graphs()
        gc.collect()
        return sum(ref() is not None for ref in self.counter["graphs"])


@pytest.fixture(params=["stand-in", "cuda"])
def cuda(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Cuda:
    if request.param == "stand-in":
        fake = FakeCuda()
        fake.install(monkeypatch)
        return Cuda(xprop.get_backend("torch", device="cpu", dtype="float64"), fake, {})
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the stand-in case covers it")
    counter: dict[str, Any] = {"captures": 0, "graphs": []}

    class CountingGraph(torch.cuda.CUDAGraph):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()
            counter["graphs"].append(weakref.ref(self))

        def capture_begin(self, *args: Any, **kwargs: Any) -> None:
            counter["captures"] += 1
            super().capture_begin(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", CountingGraph)
    return Cuda(xprop.get_backend("torch", device="cuda", dtype="float64"), None, counter)


# -- networks, data, and the eager twin ---------------------------------------------------------

IN, OUT, N, B = 12, 4, 48, 16

NETS = {
    "TwoLayerNet": lambda be: xprop.TwoLayerNet(IN, 10, OUT, "he", backend=be, seed=0),
    "Extend": lambda be: xprop.MultiLayerNetExtend(
        IN,
        [10, 8],
        OUT,
        use_batchnorm=True,
        use_dropout=True,
        dropout_ratio=0.3,
        backend=be,
        seed=0,
        dropout_device_masks=True,
    ),
}
OPTIMIZERS = {
    "SGD": lambda: SGD(lr=0.1),
    "Momentum": lambda: Momentum(lr=0.05),
    "Adam": lambda: Adam(lr=0.01),
}


def _data(be: xprop.Backend, seed: int = 5) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return be.asarray(rng.standard_normal((N, IN))), be.asarray(rng.integers(0, OUT, N))


def _host(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy().copy()


def _snapshot(net: Any, opt: Any) -> dict[str, np.ndarray]:
    out = {f"params.{k}": _host(v) for k, v in net.params.items()}
    out |= {f"stats.{k}": _host(v) for k, v in net.running_stats().items()}
    for slot, arrays in opt.state.items():
        out |= {f"{slot}.{k}": _host(v) for k, v in arrays.items()}
    return out


class Twins:
    """A :class:`CudaGraphStep` and an :class:`EagerStep` on twin networks, driven alike."""

    def __init__(self, cuda: Cuda, net: str, opt: str) -> None:
        be = self.be = cuda.backend
        self.net, self.ref = NETS[net](be), NETS[net](be)
        self.opt, self.ref_opt = OPTIMIZERS[opt](), OPTIMIZERS[opt]()
        self.step = CudaGraphStep(self.net, self.opt)
        self.eager = EagerStep(self.ref, self.ref_opt)
        self.losses: list[float] = []
        self.ref_losses: list[float] = []

    def __call__(self, x: Any, t: Any) -> None:
        self.losses.append(float(_host(self.step(x, t))))
        self.ref_losses.append(float(_host(self.eager(x, t))))

    def run(self, x: Any, t: Any, idx: Any) -> None:
        losses = self.step.run(x, t, idx)
        assert tuple(losses.shape) == (idx.shape[0],)
        self.losses += _host(losses).tolist()
        self.ref_losses += _host(self.eager.run(x, t, idx)).tolist()

    def both(self, change: Callable[[Any, Any], None]) -> None:
        """Apply ``change(net, optimizer)`` to both twins."""
        change(self.net, self.opt)
        change(self.ref, self.ref_opt)

    def assert_equal(self, tol: float = 1e-10) -> None:
        assert self.opt.iter == self.ref_opt.iter
        got, want = _snapshot(self.net, self.opt), _snapshot(self.ref, self.ref_opt)
        assert got.keys() == want.keys()
        for key in want:
            scale = max(float(np.max(np.abs(want[key]))), 1.0)
            err = float(np.max(np.abs(got[key] - want[key]))) / scale
            assert err <= tol, f"{key}: {err:.2e}"
        np.testing.assert_allclose(self.losses, self.ref_losses, rtol=tol, atol=0)


def _batch(be: xprop.Backend, x: Any, t: Any, rng: np.random.Generator, size: int) -> tuple:
    rows = be.asarray(rng.choice(N, size, replace=False))
    return torch.index_select(x, 0, rows), torch.index_select(t, 0, rows)


# -- 1. the same numbers as the eager step -------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "opt"), [("TwoLayerNet", "SGD"), ("Extend", "Adam"), ("Extend", "Momentum")]
)
def test_graph_step_equals_the_eager_step(cuda: Cuda, net: str, opt: str) -> None:
    """20 calls on two batch sizes, then ``run`` over two epochs: the eager numbers, to 1e-10.

    Parameters, optimizer state and count, BatchNorm statistics and every loss; one capture
    per batch shape, one per ``run`` data set.  A step that trained during its capture or
    warm-up, froze ``lr``/``iter`` into the graph, or replayed stale Dropout keys would
    drift from the eager step at once.
    """
    be = cuda.backend
    twins = Twins(cuda, net, opt)
    x, t = _data(be)
    rng = np.random.default_rng(1)
    for i in range(20):
        twins(*_batch(be, x, t, rng, B if i % 3 else 10))
    twins.assert_equal()
    assert cuda.captures == 2  # one per batch shape
    for _ in range(2):
        twins.run(x, t, rng.permutation(N).reshape(N // B, B))  # host indices: one epoch
    twins.run(x, t, be.asarray(rng.permutation(N).reshape(N // B, B)))  # device indices
    twins.assert_equal()
    assert twins.opt.iter == 20 + 3 * (N // B)
    assert cuda.captures == 3
    assert min(twins.losses[-3:]) < twins.losses[0]  # it trained


# -- 2. a host read in the captured step ---------------------------------------------------------


def _plant_in_relu(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``Relu.forward`` do something a captured step must not do."""
    forward = Relu.forward
    xp = xprop.get_backend("torch").xp
    plants: dict[str, Callable[[Any], Any]] = {
        "float()": lambda x: float(x.sum()),
        "item()": lambda x: x.sum().item(),
        "bool()": lambda x: bool((x > 0).any()),
        "int() of count_nonzero": lambda x: int(xp.count_nonzero(x)),
        ".cpu()": lambda x: x.cpu(),
        ".tolist()": lambda x: x.tolist(),
        "host array": lambda x: xp.asarray(np.ones(3), device=x.device),
    }
    if name == "xp.maximum(x, 0.0)":  # array-api-compat makes 0.0 a tensor: host data

        def planted(self: Relu, x: Any) -> Any:
            self.x = x
            return xp.maximum(x, 0.0)

    else:

        def planted(self: Relu, x: Any) -> Any:
            plants[name](x)
            return forward(self, x)

    monkeypatch.setattr(Relu, "forward", planted)


PLANTS = [
    "float()",
    "item()",
    "bool()",
    "int() of count_nonzero",
    ".cpu()",
    ".tolist()",
    "host array",
    "xp.maximum(x, 0.0)",
    "label range check",
]


@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("call", ["step", "run"])
def test_host_read_in_capture_is_a_clear_error(
    cuda: Cuda, monkeypatch: pytest.MonkeyPatch, plant: str, call: str
) -> None:
    """A device read or host copy in the captured step raises :class:`StepCaptureError`.

    It names what went wrong, chains the original error, leaves the current stream as it
    was, changes nothing of the training state, and the next capture (plant removed) works.
    """
    be = cuda.backend
    twins = Twins(cuda, "Extend", "Momentum")
    x, t = _data(be)
    rng = np.random.default_rng(2)
    for _ in range(3):  # optimizer state and statistics that must survive the failure
        twins(*_batch(be, x, t, rng, B))
    before = _snapshot(twins.net, twins.opt)
    stream, captures = torch.cuda.current_stream(), cuda.captures
    xb, tb = _batch(be, x, t, rng, 10)  # a new batch shape: a new capture
    idx = rng.permutation(N).reshape(N // B, B)
    with monkeypatch.context() as planted:
        if plant == "label range check":
            from xprop.training import cuda_graph

            replica = cuda_graph.replica

            def checking(net: Any) -> Any:
                twin = replica(net)
                twin.last_layer.check_labels = True
                return twin

            planted.setattr(cuda_graph, "replica", checking)
        else:
            _plant_in_relu(planted, plant)
        start = (
            (lambda: twins.step(xb, tb)) if call == "step" else lambda: twins.step.run(x, t, idx)
        )
        with pytest.raises(StepCaptureError, match="capturing the training step") as info:
            start()
    cause = info.value.__cause__
    assert cause is not None
    assert type(cause).__name__ in str(info.value)
    if cuda.fake is not None:
        if plant == "label range check":
            assert "label range check" in str(cause)
            assert NOT_PERMITTED in str(cause.__cause__)
        else:
            assert NOT_PERMITTED in str(cause)
    assert torch.cuda.current_stream() == stream
    assert not torch.cuda.is_current_stream_capturing()
    assert cuda.captures == captures + 1
    assert twins.opt.iter == twins.ref_opt.iter == 3
    after = _snapshot(twins.net, twins.opt)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    # Plant removed: the same calls capture and train as the eager step does.
    twins(xb, tb)
    twins.run(x, t, idx)
    twins.assert_equal()


# -- 3. what the graphs read: rebound parameters, the data of run, the cache ------------------


def test_rebound_parameter_is_trained(cuda: Cuda) -> None:
    """``net.params["W1"] = new`` between steps (as a checkpoint load does) recaptures, and
    the new tensor is trained as by the eager step.

    The review's failing case: rebinding twice in a row frees the tensor the graph was
    captured with (once nothing else holds it) before the second new tensor is made, which
    then often takes its place and its ``id()``: a step that compares ``id()``s without
    keeping the tensors sees no change and goes on training freed memory.
    """
    be = cuda.backend
    twins = Twins(cuda, "TwoLayerNet", "Momentum")
    x, t = _data(be)
    rng = np.random.default_rng(3)

    def rebind(net: Any, opt: Any) -> None:
        net.params["W1"] = net.params["W1"] * 1.0

    def rebind_twice(net: Any, opt: Any) -> None:
        net.params["W1"] = net.params["W1"] * 1.0
        net.params["W1"] = net.params["W1"] + 0.01

    for captures, change in enumerate((None, rebind, rebind_twice, rebind_twice), start=1):
        if change is not None:
            twins.both(change)
        for _ in range(3):
            twins(*_batch(be, x, t, rng, B))
        assert cuda.captures == captures
    twins.assert_equal()


def test_run_keeps_its_data_and_reads_it_where_it_lies(cuda: Cuda) -> None:
    """``run`` reads ``x``/``t`` in place (in-place changes count) and keeps them alive; a
    new ``x`` or ``t`` captures anew, and a graph dropped from the cache releases its data."""
    be = cuda.backend
    twins = Twins(cuda, "Extend", "Adam")
    twins.step.max_graphs = 2
    x, t = _data(be)
    rng = np.random.default_rng(4)

    def rows() -> np.ndarray:
        return rng.permutation(N).reshape(N // B, B)

    x1 = x.clone()
    twins.run(x1, t, rows())
    x1.mul_(0.5)  # the graph reads x1 where it lies
    twins.run(x1, t, rows())
    assert cuda.captures == 1
    kept = weakref.ref(x1)
    x2 = x1 + 0.25
    del x1
    gc.collect()
    assert kept() is not None  # the graph reads it: the step keeps it
    twins.run(x2, t, rows())
    assert cuda.captures == 2
    t2 = t.clone()
    twins.run(x2, t2, rows())  # a new t: a new graph, the first one dropped (max_graphs=2)
    assert cuda.captures == 3
    gc.collect()
    assert kept() is None
    x3 = x2 * 1.0  # may take the id of the array just freed
    twins.run(x3, t2, rows())
    assert cuda.captures == 4
    twins.assert_equal()


def test_graph_cache_is_bounded(cuda: Cuda) -> None:
    be = cuda.backend
    twins = Twins(cuda, "TwoLayerNet", "SGD")
    twins.step.max_graphs = 3
    x, t = _data(be)
    rng = np.random.default_rng(6)
    for size in [*range(2, 12), 11, 10, 9]:  # ten shapes; the last three are cached
        twins(*_batch(be, x, t, rng, size))
    assert cuda.captures == 10
    assert cuda.live_graphs() <= 3
    twins.assert_equal()


def test_graph_keeps_the_constants_it_reads(cuda: Cuda) -> None:
    """xprop's cache of constant arrays (ones vectors, ReLU's zero, ``arange(C)``) may be
    cleared at any time; a graph that read them must keep them."""
    be = cuda.backend
    twins = Twins(cuda, "Extend", "Adam")
    x, t = _data(be)
    rng = np.random.default_rng(7)
    twins(*_batch(be, x, t, rng, B))
    twins.run(x, t, rng.permutation(N).reshape(N // B, B))
    _constants._CACHE.clear()
    gc.collect()
    for _ in range(3):
        twins(*_batch(be, x, t, rng, B))
    twins.run(x, t, rng.permutation(N).reshape(N // B, B))
    twins.assert_equal()


# -- 4. what the host changes between calls ------------------------------------------------------


def test_hyperparameters_count_and_state_from_the_host(cuda: Cuda) -> None:
    """``lr`` is an input of the graph (no recapture); another hyperparameter is frozen into
    it (recapture); ``iter``, the optimizer's slots and the statistics set from outside are
    honoured."""
    be = cuda.backend
    twins = Twins(cuda, "Extend", "Adam")
    x, t = _data(be)
    rng = np.random.default_rng(8)

    def steps(k: int = 3) -> None:
        for _ in range(k):
            twins(*_batch(be, x, t, rng, B))

    steps()
    assert cuda.captures == 1

    def set_lr(net: Any, opt: Any) -> None:
        opt.lr = 0.003

    twins.both(set_lr)
    steps()
    assert cuda.captures == 1
    twins.assert_equal()

    def set_beta1(net: Any, opt: Any) -> None:
        opt.beta1 = 0.8

    twins.both(set_beta1)
    steps()
    assert cuda.captures == 2
    twins.assert_equal()

    def set_iter(net: Any, opt: Any) -> None:
        opt.iter = 100  # (load_state_dict copies the slots: new arrays, a new capture)

    twins.both(set_iter)
    steps()
    assert cuda.captures == 2
    assert twins.opt.iter == 103
    twins.assert_equal()

    def new_slots(net: Any, opt: Any) -> None:
        state = opt.state_dict()
        state["slots"] = {
            s: {k: a * 0.5 for k, a in arrays.items()} for s, arrays in opt.state.items()
        }
        opt.load_state_dict(state)
        net.set_running_stats({k: v * 0.5 for k, v in net.running_stats().items()})

    twins.both(new_slots)
    steps()
    assert cuda.captures == 3
    twins.assert_equal()


def test_warmup_error_is_the_eager_steps_own(cuda: Cuda) -> None:
    """A bad batch fails in the warm-up (eager, before any capture) with the error the
    eager step raises, nothing changed; ``run`` over no rows runs nothing."""
    be = cuda.backend
    twins = Twins(cuda, "Extend", "Adam")
    x, t = _data(be)
    rng = np.random.default_rng(9)
    twins(*_batch(be, x, t, rng, B))
    before, stream, captures = _snapshot(twins.net, twins.opt), torch.cuda.current_stream(), 1
    message = r"integer labels must have shape \(10,\)"
    with pytest.raises(ValueError, match=message):
        twins.eager(x[:10], t[:9])
    with pytest.raises(ValueError, match=message):
        twins.step(x[:10], t[:9])
    assert torch.cuda.current_stream() == stream
    assert cuda.captures == captures
    losses = twins.step.run(x, t, np.zeros((0, B), dtype=np.int64))
    assert tuple(losses.shape) == (0,)
    assert cuda.captures == captures
    assert twins.opt.iter == 1
    after = _snapshot(twins.net, twins.opt)
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_labels_are_checked_before_the_graph(cuda: Cuda) -> None:
    """A network that checks labels has them checked before any capture or replay (the
    graph cannot raise on data): the eager step's error, nothing captured or trained."""
    be = cuda.backend
    x, _ = _data(be)
    bad = be.asarray(np.array([0, 1, 7, 2] * (N // 4)))  # 7 of 4 classes
    net = NETS["TwoLayerNet"](be)
    before, opt = _snapshot(net, SGD()), Adam()
    step = CudaGraphStep(net, opt)
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        step(x, bad)
    with pytest.raises(ValueError, match="labels out of range"):
        step.run(x, bad, np.zeros((2, 4), dtype=np.int64))
    assert cuda.captures == 0
    assert opt.iter == 0
    for key, value in _snapshot(net, SGD()).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
