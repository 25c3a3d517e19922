"""Data-parallel training on MPI: the same script on one process, on N, on a cluster.

Every rank (process) holds the whole network and the whole data set.  Each step, every rank
draws the *same* global minibatch indices from the seeded host generator, takes its own
contiguous slice of them (:meth:`DataParallel.shard`), computes the gradient of its slice,
and the ranks average their gradients (:meth:`DataParallel.average_gradients`: one buffer
for all parameters, one ``Allreduce``).  The network's loss is a mean over the batch, so
the average of equal slices' mean gradients is the mean gradient of the global batch: N
ranks with global batch ``B`` take the step one process takes with batch ``B``, up to
floating-point rounding.  Ranks start identical (:meth:`DataParallel.broadcast_params`)
and stay identical, since they apply the same update to the same parameters.

MPI is reached through mpi4py (``pip install 'xprop[mpi]'`` installs mpi4py and MPICH with
its ``mpiexec``)::

    dp = DataParallel()  # mpi4py.MPI.COMM_WORLD; DataParallel(comm) for any communicator
    net = xprop.TwoLayerNet(784, 50, 10, backend=dp.get_backend(), seed=0)
    dp.broadcast_params(net.params)  # every rank starts from rank 0's parameters
    for i in range(iters):
        idx = dp.shard(rng.choice(60000, 1024))  # this rank's slice of the global batch
        grads = net.gradient(xp.take(x_train, idx, axis=0), xp.take(t_train, idx, axis=0))
        grads = dp.average_gradients(grads)  # in place; a new dict on JAX
        for key in net.params:
            net.params[key] -= lr * grads[key]
    acc = dp.accuracy(net, x_test, t_test)  # each rank scores a slice; the counts are summed

    $ mpiexec -n 2 python train.py

What each array library needs (host buffers, a CUDA-aware MPI reading GPU memory, JAX's
immutable arrays) lives in its :class:`~xprop.ArrayLibrary` (``pack``/``unpack``); this
module only speaks MPI.  Nothing here hangs on a mistake: the ranks compare the names,
shapes and dtypes of what they exchange once, before the first collective on data, and
raise the same :class:`DistributedError` on every rank when they differ; a rank that fails
with any other error aborts them all, naming itself and the error.  Importing this module
does not import mpi4py: :class:`DataParallel` does.  Like :mod:`xprop.checkpoint`, it works
with host buffers and imports NumPy.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import numbers
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, NoReturn

from xprop._namespace import dtype_name, namespace, require_array
from xprop.backend import ENV_DEVICE, Backend, get_backend
from xprop.libraries import library_for

__all__ = [
    "INSTALL_HINT",
    "DataParallel",
    "DistributedError",
    "device_for_local_rank",
    "mpi_is_cuda_aware",
]

#: How to get MPI, for error messages.
INSTALL_HINT = (
    "pip install 'xprop[mpi]' (mpi4py with the MPICH library and its mpiexec); on a "
    "cluster, build mpi4py against the cluster's MPI instead: "
    "pip install --no-binary=mpi4py mpi4py"
)
#: Set to 1 or 0 to say whether MPI reads GPU memory, where the library cannot tell.
ENV_CUDA_AWARE = "XPROP_MPI_CUDA_AWARE"
#: Seconds between printing why a rank aborts and aborting (for the message to get out).
ABORT_GRACE_S = 0.5

logger = logging.getLogger(__name__)


class DistributedError(ValueError):
    """MPI is missing, the ranks disagree on what they exchange, or a global batch does not
    divide among them; the message says what to do."""


def _import_mpi() -> Any:
    """``mpi4py.MPI``, or a :class:`DistributedError` naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py found no MPI library
        raise DistributedError(
            f"data-parallel training needs MPI, which is not available here "
            f"({type(exc).__name__}: {exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return MPI


class DataParallel:
    """Data-parallel SGD over the ranks of an MPI communicator.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The ranks that train together; default ``mpi4py.MPI.COMM_WORLD`` (every process
        ``mpiexec`` started).  Any intra-communicator is accepted, e.g. a
        ``COMM_WORLD.Split(...)`` of it.  With one process (plain ``python script.py``)
        every collective is skipped and training is the single-process training.
    abort_on_error : bool
        With more than one rank, install a ``sys.excepthook`` that, after the usual
        traceback, names this rank and the error and aborts every rank
        (``comm.Abort``): an exception nobody catches on one rank would otherwise leave the
        others waiting in their next collective forever.  Code that catches exceptions
        itself wraps its work in :meth:`abort_on_error`.

    Attributes
    ----------
    comm : mpi4py.MPI.Intracomm
    rank, size : int
        This process's rank in ``comm`` and the number of ranks.
    local_rank, local_size : int
        The rank among the ranks on this machine (node), and their number: the rank that
        picks this process's GPU (:meth:`get_backend`).

    Raises
    ------
    DistributedError
        mpi4py or an MPI library is not installed (the message names the ``mpi`` extra).
    TypeError
        ``comm`` is not an mpi4py intra-communicator.
    """

    def __init__(self, comm: Any = None, *, abort_on_error: bool = True) -> None:
        MPI = _import_mpi()
        self._MPI = MPI
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
            raise TypeError(
                f"comm must be an mpi4py intra-communicator such as mpi4py.MPI.COMM_WORLD "
                f"(or a Split of it), got {type(comm).__name__} {comm!r:.60}"
            )
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank: int = node.Get_rank()
        self.local_size: int = node.Get_size()
        node.Free()
        self._agreed: dict[str, tuple[Any, ...]] = {}  # what -> the layout the ranks agreed on
        self._fingerprints: dict[str, Any] = {}  # what -> a cheap local check of the same
        self._buffers: dict[tuple[Any, ...], Any] = {}  # reused flat buffers, per layout
        self._staging_said = False
        if abort_on_error and self.size > 1:
            _install_excepthook(self)

    def __repr__(self) -> str:
        return f"<DataParallel rank {self.rank} of {self.size}>"

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0, the rank that prints and writes files."""
        return self.rank == 0

    # -- placement --------------------------------------------------------------------

    def get_backend(self, name: str | Backend | None = None, *, dtype: Any = None) -> Backend:
        """:func:`xprop.get_backend` with this rank's device: one GPU per rank on a node.

        When ``$XPROP_DEVICE`` is set it decides, as always.  Otherwise, on an accelerator
        library, the device is the ``local_rank``-th of the machine's accelerators (modulo
        their number: ranks beyond it share, which is said once).  CPU backends are
        returned as :func:`xprop.get_backend` gives them.
        """
        backend = get_backend(name, dtype=dtype)
        if os.environ.get(ENV_DEVICE) or not backend.is_accelerator:
            return backend
        lib = backend.library
        accelerators = [d for d in lib.devices(backend.xp) if lib.is_accelerator(d)]
        device = device_for_local_rank(self.local_rank, accelerators)
        if self.local_size > len(accelerators) and self.local_rank == 0:
            logger.warning(
                "xprop.distributed: %d ranks share %d accelerators on this node; start one "
                "rank per GPU for full speed",
                self.local_size,
                len(accelerators),
            )
        return get_backend(backend.name, device=device, dtype=backend.dtype_name)

    # -- minibatches and evaluation ------------------------------------------------------

    def shard(self, indices: Any) -> Any:
        """This rank's contiguous slice of global minibatch indices (along the last axis).

        ``indices`` holds the same numbers on every rank: ``(B,)`` for one step or ``(k, B)``
        for ``k`` steps, drawn from the same seeded generator (``backend.rng(seed)``).
        Rank ``r`` gets columns ``r * B / size`` to ``(r + 1) * B / size``.

        Raises :class:`DistributedError` (a ``ValueError``) unless ``B`` divides evenly by
        ``size`` (see :meth:`local_batch_size`).
        """
        n = self.local_batch_size(int(indices.shape[-1]))
        return indices[..., self.rank * n : (self.rank + 1) * n]

    def local_batch_size(self, global_batch: int) -> int:
        """Samples per rank of a global batch: ``global_batch / size``.

        Raises :class:`DistributedError` (a ``ValueError``) unless it divides evenly:
        unequal slices would weigh some samples more than others in the averaged gradient.
        """
        b = global_batch
        if b % self.size:
            options = sorted({max(b - b % self.size, self.size), b - b % self.size + self.size})
            raise DistributedError(
                f"a global batch of {b} samples does not divide evenly among {self.size} "
                f"ranks; choose a multiple of {self.size} (e.g. "
                f"{' or '.join(map(str, options))}) or another number of ranks"
            )
        return b // self.size

    def rows(self, n: int) -> tuple[int, int]:
        """``(start, stop)``: this rank's contiguous share of ``n`` rows, sizes within one."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def accuracy(self, net: Any, x: Any, t: Any, **kwargs: Any) -> float:
        """``net.accuracy(x, t)`` with each rank scoring its :meth:`rows`; the counts summed.

        Every rank holds the same ``x`` and ``t`` and gets the same result, the fraction of
        all ``N`` samples classified right: each rank's count is exact, so the sum is the
        single-process count.  ``kwargs`` go to ``net.accuracy`` (e.g. ``batch_size``).

        Raises ``ValueError`` for an empty batch (on every rank, before any collective).
        """
        n = int(x.shape[0])
        if n == 0:
            raise ValueError("accuracy of an empty batch is undefined; pass at least one sample")
        start, stop = self.rows(n)
        correct = 0
        if stop > start:
            fraction = net.accuracy(x[start:stop, ...], t[start:stop, ...], **kwargs)
            correct = round(fraction * (stop - start))  # exact: the count was an integer
        if self.size > 1:
            correct = self.comm.allreduce(correct, op=self._MPI.SUM)
        return correct / n

    def average(self, values: Sequence[float]) -> list[float]:
        """The mean over the ranks of host numbers, element by element, the same on every rank.

        Every rank passes as many numbers.  For logging, e.g. each step's loss: the mean of
        the ranks' losses on equal slices is the loss of the global batch.
        """
        local = [float(v) for v in values]
        if self.size == 1:
            return local
        everyone = self.comm.allgather(local)
        if any(len(theirs) != len(local) for theirs in everyone):
            raise DistributedError(
                f"average: the ranks passed {[len(v) for v in everyone]} numbers; every rank "
                "must pass as many"
            )
        return [sum(column) / self.size for column in zip(*everyone, strict=True)]

    # -- parameters and gradients ------------------------------------------------------

    def check_same(self, arrays: Mapping[str, Any], what: str = "parameters") -> None:
        """Check that every rank holds the same keys, shapes and dtypes in ``arrays``.

        A collective (every rank must call it): the ranks exchange a description of
        ``arrays``, not the data.  :meth:`broadcast_params` and :meth:`average_gradients`
        call it themselves, once, before their first collective on data.

        Raises :class:`DistributedError` on every rank when any rank differs, naming the
        first difference: ranks that disagree would otherwise exchange buffers of
        different sizes, which MPI may not notice (or may wait for forever).
        """
        mine = _layout(arrays)
        everyone = self.comm.allgather(mine) if self.size > 1 else [mine]
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise DistributedError(
                    f"the ranks disagree on the {what}: {_difference(everyone[0], theirs, rank)}"
                    "; every rank must build the same network with the same dtype (check "
                    "each rank's command line and its XPROP_DTYPE/XPROP_BACKEND)"
                )
        self._agreed[what] = mine

    def broadcast_params(self, params: MutableMapping[str, Any], root: int = 0) -> Any:
        """Overwrite ``params`` on every rank with rank ``root``'s: every rank starts identical.

        One ``Bcast`` of one buffer per dtype.  In place where arrays are mutable; on JAX
        the dict's entries are rebound to new arrays (the network's layers read the dict,
        so they see them).  Returns ``params``.  Checks the layout first
        (:meth:`check_same`).

        Raises :class:`DistributedError` when the ranks' parameters differ in keys, shapes
        or dtypes; ``ValueError`` for a ``root`` that is not a rank.
        """
        if isinstance(root, bool) or not isinstance(root, numbers.Integral):
            raise ValueError(f"root must be a rank, an integer, got {root!r}")
        if not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in 0..{self.size - 1}, got {root}")
        layout = self._check_layout(params, "parameters")
        if self.size == 1:
            return params
        for group in _groups(layout):
            keys = [params_key for params_key in _keys(params) if str(params_key) in group]
            arrays = [params[k] for k in keys]
            buffer = self._pack("parameters", group, arrays)
            self.comm.Bcast(buffer, root=root)
            for key, new in zip(keys, self._unpack(buffer, arrays), strict=True):
                if new is not params[key]:
                    params[key] = new
        return params

    def average_gradients(self, grads: Mapping[str, Any]) -> Any:
        """The mean over the ranks of each gradient in ``grads``: one ``Allreduce`` for all.

        :meth:`average_arrays` with ``what="gradients"``.
        """
        return self.average_arrays(grads, "gradients")

    def average_arrays(self, arrays: Mapping[str, Any], what: str = "arrays") -> Any:
        """The mean over the ranks of each array in ``arrays``: one ``Allreduce`` for all.

        The arrays are packed into one flat buffer (one per dtype), summed across the
        ranks in place (``MPI.IN_PLACE``), divided by :attr:`size`, and written back:

        - NumPy, array-api-strict, PyTorch, CuPy: into the same arrays, in place, and
          ``arrays`` itself is returned;
        - JAX (immutable arrays): a new dict of new arrays is returned, ``arrays``
          unchanged.

        Write ``grads = dp.average_gradients(grads)`` to cover both.  Host buffers are
        reused from call to call.  GPU arrays are read on the GPU by a CUDA-aware MPI
        (:func:`mpi_is_cuda_aware`), else staged through host memory (said once, in a log
        line).  The first call for each ``what`` checks that every rank sends the same
        keys, shapes and dtypes (:meth:`check_same`); later calls check locally that
        nothing changed.

        Raises
        ------
        DistributedError
            The ranks' arrays differ in keys, shapes or dtypes (on every rank), or this
            rank's arrays changed since that check.
        """
        layout = self._check_layout(arrays, what)
        if self.size == 1:
            return arrays
        out: dict[str, Any] | None = None
        for group in _groups(layout):
            keys = [k for k in _keys(arrays) if str(k) in group]
            members = [arrays[k] for k in keys]
            buffer = self._pack(what, group, members)
            self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
            buffer /= self.size
            new = self._unpack(buffer, members)
            if any(n is not a for n, a in zip(new, members, strict=True)):
                out = dict(arrays) if out is None else out
                out.update(zip(keys, new, strict=True))
        return arrays if out is None else out

    # -- failure ----------------------------------------------------------------------

    @contextlib.contextmanager
    def abort_on_error(
        self, expected: tuple[type[BaseException], ...] = (), errorcode: int = 1
    ) -> Iterator[None]:
        """Abort every rank, naming this one and the error, when the block raises.

        For code where one rank may fail alone (a data file missing on one node, a bug on
        one rank) and that catches exceptions, so that :data:`sys.excepthook` never sees
        them, or that calls ``sys.exit``: a rank that leaves while the others wait in a
        collective would leave them waiting forever.  Prints the traceback (the message
        alone for the ``expected`` exception types) and ``xprop.distributed: rank R of N
        failed: Error: message; aborting all N ranks`` to stderr, then calls
        ``comm.Abort(errorcode)``.  ``sys.exit(code)`` inside the block counts as a
        failure (without a traceback).  With one rank the exception propagates as usual;
        ``SystemExit(0)`` always does.
        """
        try:
            yield
        except BaseException as exc:
            if self.size == 1 or (isinstance(exc, SystemExit) and not exc.code):
                raise
            if not isinstance(exc, (SystemExit, *expected)):
                traceback.print_exc()
            self.abort(exc, errorcode)

    def abort(self, error: BaseException | str, errorcode: int = 1) -> NoReturn:
        """Print which rank failed and why, then abort every rank of :attr:`comm`.

        Never returns: this process ends with ``errorcode`` even where ``MPI_Abort``
        returns before the launcher has killed it.
        """
        what = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        print(
            f"xprop.distributed: rank {self.rank} of {self.size} failed: {what}; "
            f"aborting all {self.size} ranks",
            file=sys.stderr,
            flush=True,
        )
        # The launcher forwards each rank's output through a pipe and stops reading when it
        # tears the job down: give it a moment, or the message may be lost (MPICH's Hydra).
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(errorcode)
        # MPI_Abort may return before the launcher kills this process (MPICH does): nothing
        # of this rank's program may run after it.
        os._exit(errorcode)

    # -- internals --------------------------------------------------------------------

    def _check_layout(self, arrays: Mapping[str, Any], what: str) -> tuple[Any, ...]:
        """The layout of ``arrays``, agreed with the other ranks the first time."""
        agreed = self._agreed.get(what)
        if agreed is None:
            self.check_same(arrays, what)
            self._fingerprints[what] = _fingerprint(arrays)
            return self._agreed[what]
        fingerprint = _fingerprint(arrays)
        if fingerprint is not None and fingerprint == self._fingerprints.get(what):
            return agreed  # the usual step: a few microseconds, not a full description
        mine = _layout(arrays)
        if mine == agreed:
            self._fingerprints[what] = fingerprint  # the same arrays in another dict order
        else:
            raise DistributedError(
                f"this rank's {what} changed after the ranks agreed on them: "
                f"{_difference(agreed, mine, self.rank)}; the other ranks still exchange the "
                "old ones, so training cannot go on (keep the network's parameters fixed in "
                "keys, shapes and dtypes, or make a new DataParallel)"
            )
        return mine

    def _pack(self, what: str, group: frozenset[str], arrays: Sequence[Any]) -> Any:
        lib = library_for(namespace(*arrays))
        on_device = self._on_device(lib, arrays[0])
        key = (what, group, tuple(tuple(a.shape) for a in arrays), on_device)
        buffer = lib.pack(arrays, self._buffers.get(key), device=on_device)
        self._buffers[key] = buffer
        return buffer

    def _unpack(self, buffer: Any, arrays: Sequence[Any]) -> list[Any]:
        return library_for(namespace(*arrays)).unpack(buffer, arrays)

    def _on_device(self, lib: Any, array: Any) -> bool:
        """Whether MPI reads the buffer on the accelerator (else it is staged on the host)."""
        from array_api_compat import device as device_of

        if not lib.is_accelerator(device_of(array)):
            return False
        if lib.device_buffers and mpi_is_cuda_aware():
            return True
        if not self._staging_said and self.rank == 0:
            why = (
                f"{lib.name} arrays cannot be written by MPI in place"
                if not lib.device_buffers
                else f"this MPI is not CUDA-aware (set {ENV_CUDA_AWARE}=1 if it is)"
            )
            logger.warning(
                "xprop.distributed: %s, so the buffers go through host memory: one copy "
                "from the GPU and one back per collective",
                why,
            )
        self._staging_said = True
        return False


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def device_for_local_rank(local_rank: int, devices: Sequence[Any]) -> Any:
    """The device of the ``local_rank``-th rank on a node: ``devices[local_rank % len]``.

    Raises ``ValueError`` when there is no device to choose from.
    """
    if not devices:
        raise ValueError("no accelerator to place this rank on; choose a CPU backend")
    return devices[local_rank % len(devices)]


_cuda_aware: bool | None = None


def mpi_is_cuda_aware() -> bool:
    """Whether the MPI library reads GPU memory itself (a CUDA-aware build).

    ``$XPROP_MPI_CUDA_AWARE`` (``1`` or ``0``) decides when set; otherwise the loaded MPI
    library is asked (``MPIX_Query_cuda_support``, which Open MPI and MPICH provide);
    an MPI that cannot be asked counts as not CUDA-aware.
    """
    global _cuda_aware
    env = os.environ.get(ENV_CUDA_AWARE, "").strip()
    if env:
        if env not in ("0", "1"):
            raise DistributedError(f"{ENV_CUDA_AWARE} must be 0 or 1, got {env!r}")
        return env == "1"
    if _cuda_aware is None:
        _cuda_aware = _query_cuda_support()
    return _cuda_aware


def _query_cuda_support() -> bool:
    _import_mpi()  # loads the MPI library into this process
    try:
        with open("/proc/self/maps") as maps:  # Linux: where the loaded libmpi lies
            paths = {line.split()[-1] for line in maps if "libmpi" in line}
    except OSError:
        return False
    for path in sorted(paths):
        try:
            query = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        return bool(query())
    return False


def _keys(arrays: Mapping[str, Any]) -> list[Any]:
    """The keys in a fixed order, the same on every rank whatever the dict's order."""
    return sorted(arrays, key=str)


def _layout(arrays: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """``(key, shape, dtype)`` of every array, in :func:`_keys` order: what ranks compare."""
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"expected a dict of arrays (like net.params or net.gradient(x, t)), got "
            f"{type(arrays).__name__}"
        )
    out = []
    for key in _keys(arrays):
        value = arrays[key]
        require_array(value, f"entry {key!r}")
        xp = namespace(value)
        out.append((str(key), tuple(int(d) for d in value.shape), dtype_name(xp, value.dtype)))
    return tuple(out)


def _fingerprint(arrays: Mapping[str, Any]) -> Any:
    """Keys, shapes and dtype objects in the dict's order (``None`` for a non-array)."""
    try:
        return tuple((k, tuple(v.shape), v.dtype) for k, v in arrays.items())
    except (AttributeError, TypeError):
        return None


def _groups(layout: tuple[tuple[str, tuple[int, ...], str], ...]) -> list[frozenset[str]]:
    """The keys of each dtype (one buffer per dtype), in a fixed order."""
    by_dtype: dict[str, set[str]] = {}
    for key, _, dtype in layout:
        by_dtype.setdefault(dtype, set()).add(key)
    return [frozenset(by_dtype[d]) for d in sorted(by_dtype)]


def _describe(entry: tuple[str, tuple[int, ...], str]) -> str:
    key, shape, dtype = entry
    return f"{key} {shape} {dtype}"


def _difference(reference: tuple[Any, ...], other: tuple[Any, ...], rank: int) -> str:
    """The first difference between rank 0's layout and ``rank``'s, in words."""
    ref = {e[0]: e for e in reference}
    got = {e[0]: e for e in other}
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    if missing or extra:
        return (
            f"rank {rank} has keys {sorted(got)} where rank 0 has {sorted(ref)} "
            f"(missing: {missing}, extra: {extra})"
        )
    for key in ref:
        if ref[key] != got[key]:
            return f"rank {rank} has {_describe(got[key])} where rank 0 has {_describe(ref[key])}"
    return "they differ"


_hooked: list[DataParallel] = []


def _install_excepthook(dp: DataParallel) -> None:
    """Abort every rank when an exception nobody catches ends this one (installed once)."""
    _hooked[:] = [dp]  # the newest DataParallel's communicator is the one aborted
    if getattr(sys.excepthook, "_xprop_abort", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        previous(exc_type, exc, tb)  # the usual traceback first
        if _hooked:
            _hooked[0].abort(exc)

    hook._xprop_abort = True  # type: ignore[attr-defined]
    sys.excepthook = hook
