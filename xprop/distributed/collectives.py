"""The collectives of data-parallel training: :class:`DataParallel`.

Every rank draws the same global minibatch indices, takes its slice of them
(:meth:`DataParallel.shard`), and the ranks average their gradients
(:meth:`DataParallel.average_gradients`: one buffer per dtype, one ``Allreduce``), after
starting from rank 0's parameters (:meth:`DataParallel.broadcast_params`).  See
:mod:`xprop.distributed` for the whole picture; :mod:`~xprop.distributed.layout` holds what
the ranks compare before they exchange, :mod:`~xprop.distributed.abort` what happens when one
rank fails, :mod:`~xprop.distributed.mpi` how MPI is reached.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any, NoReturn

from xprop._namespace import namespace
from xprop.backend import ENV_DEVICE, Backend, get_backend
from xprop.distributed.abort import abort as abort_ranks
from xprop.distributed.abort import abort_on_error as abort_ranks_on_error
from xprop.distributed.abort import install_excepthook
from xprop.distributed.errors import DistributedError
from xprop.distributed.layout import Layout, difference, fingerprint, groups, keys, layout
from xprop.distributed.mpi import ENV_CUDA_AWARE, import_mpi, mpi_is_cuda_aware
from xprop.distributed.placement import device_for_local_rank, share_accelerators
from xprop.libraries import library_for
from xprop.typing import Array

__all__ = ["DataParallel"]

# The name users and tests know these log lines by, whichever module writes them.
logger = logging.getLogger("xprop.distributed")


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

    Notes
    -----
    With more than one rank on this node, ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set
    unless the environment sets it (:func:`~xprop.distributed.placement.share_accelerators`),
    so that JAX ranks sharing a GPU each allocate what they use instead of the first taking
    75 % of it: make the ``DataParallel`` before this process's first JAX array.
    """

    def __init__(self, comm: Any = None, *, abort_on_error: bool = True) -> None:
        MPI = import_mpi()
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
        share_accelerators(self.local_size)  # before this rank's first JAX array
        self._agreed: dict[str, Layout] = {}  # what -> the layout the ranks agreed on
        self._fingerprints: dict[str, Any] = {}  # what -> a cheap local check of the same
        self._buffers: dict[tuple[Any, ...], Any] = {}  # reused flat buffers, per layout
        self._staging_said = False
        if abort_on_error and self.size > 1:
            install_excepthook(self.abort)

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

    def shard(self, indices: Array) -> Array:
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

    def accuracy(self, net: Any, x: Array, t: Array, **kwargs: Any) -> float:
        """``net.accuracy(x, t)`` with each rank scoring its :meth:`rows`; the counts summed.

        Every rank holds the same ``x`` and ``t`` and gets the same result, the fraction of
        all ``N`` samples classified right: each rank's count is exact, so the sum is the
        single-process count.  ``kwargs`` go to ``net.accuracy`` (e.g. ``batch_size``).
        One ``allgather`` of each rank's ``(N, count)``: the ranks check that they scored
        the same ``N`` in the same call that sums the counts.

        Raises
        ------
        DistributedError
            The ranks passed different numbers of samples (on every rank, naming each
            rank's): their slices would not cover the data, and the sum over one rank's
            ``N`` would be a wrong number (above 1, even).
        ValueError
            An empty batch (on every rank).
        """
        n = int(x.shape[0])
        start, stop = self.rows(n)
        correct = 0
        if stop > start:
            fraction = net.accuracy(x[start:stop, ...], t[start:stop, ...], **kwargs)
            correct = round(fraction * (stop - start))  # exact: the count was an integer
        if self.size > 1:
            everyone = self.comm.allgather((n, correct))
            counts = [theirs for theirs, _ in everyone]
            if any(c != n for c in counts):
                raise DistributedError(
                    "accuracy: the ranks passed different numbers of samples ("
                    + ", ".join(f"{c} on rank {r}" for r, c in enumerate(counts))
                    + "); every rank passes the same x and t (each scores its share of them)"
                )
            correct = sum(hits for _, hits in everyone)
        if n == 0:
            raise ValueError("accuracy of an empty batch is undefined; pass at least one sample")
        return correct / n

    def check_equal(self, values: Mapping[str, Any], what: str) -> None:
        """Check that every rank passes equal host ``values`` (numbers, strings, ``None``).

        A collective (every rank must call it): one ``allgather`` of ``values``.  For the
        settings that fix how many collectives a run makes (a training set's size, the
        batch, the epochs): ranks that differ would wait for each other forever.

        Raises :class:`DistributedError` on every rank when any value differs, naming each
        differing value on each rank, e.g. ``mini_batch_size: 100 on rank 0, 50 on rank 1``.
        """
        mine = dict(values)
        everyone = self.comm.allgather(mine) if self.size > 1 else [mine]
        names = list(mine)
        for theirs in everyone[1:]:
            names += [k for k in theirs if k not in names]
        missing = object()
        lines = []
        for name in names:
            seen = [theirs.get(name, missing) for theirs in everyone]
            if any(v != seen[0] for v in seen):
                each = ", ".join(
                    f"{'(none)' if v is missing else repr(v)} on rank {r}"
                    for r, v in enumerate(seen)
                )
                lines.append(f"{name}: {each}")
        if lines:
            raise DistributedError(f"the ranks disagree on the {what}: " + "; ".join(lines))

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

    def check_same(self, arrays: Mapping[str, Array], what: str = "parameters") -> None:
        """Check that every rank holds the same keys, shapes and dtypes in ``arrays``.

        A collective (every rank must call it): the ranks exchange a description of
        ``arrays``, not the data.  :meth:`broadcast_params` and :meth:`average_gradients`
        call it themselves, once, before their first collective on data.

        Raises :class:`DistributedError` on every rank when any rank differs, naming the
        first difference: ranks that disagree would otherwise exchange buffers of
        different sizes, which MPI may not notice (or may wait for forever).
        """
        mine = layout(arrays)
        everyone = self.comm.allgather(mine) if self.size > 1 else [mine]
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise DistributedError(
                    f"the ranks disagree on the {what}: {difference(everyone[0], theirs, rank)}"
                    "; every rank must build the same network with the same dtype (check "
                    "each rank's command line and its XPROP_DTYPE/XPROP_BACKEND)"
                )
        self._agreed[what] = mine

    def broadcast_params(
        self, params: MutableMapping[str, Array], root: int = 0
    ) -> MutableMapping[str, Array]:
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
        agreed = self._check_layout(params, "parameters")
        if self.size == 1:
            return params
        for group in groups(agreed):
            names = [params_key for params_key in keys(params) if str(params_key) in group]
            arrays = [params[k] for k in names]
            buffer = self._pack("parameters", group, arrays)
            self.comm.Bcast(buffer, root=root)
            for key, new in zip(names, self._unpack(buffer, arrays), strict=True):
                if new is not params[key]:
                    params[key] = new
        return params

    def average_gradients(self, grads: Mapping[str, Array]) -> Mapping[str, Array]:
        """The mean over the ranks of each gradient in ``grads``: one ``Allreduce`` for all.

        :meth:`average_arrays` with ``what="gradients"``.
        """
        return self.average_arrays(grads, "gradients")

    def average_arrays(
        self, arrays: Mapping[str, Array], what: str = "arrays"
    ) -> Mapping[str, Array]:
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
        agreed = self._check_layout(arrays, what)
        if self.size == 1:
            return arrays
        out: dict[str, Any] | None = None
        for group in groups(agreed):
            names = [k for k in keys(arrays) if str(k) in group]
            members = [arrays[k] for k in names]
            buffer = self._pack(what, group, members)
            self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
            buffer /= self.size
            new = self._unpack(buffer, members)
            if any(n is not a for n, a in zip(new, members, strict=True)):
                out = dict(arrays) if out is None else out
                out.update(zip(names, new, strict=True))
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
        with abort_ranks_on_error(self.comm, expected, errorcode):
            yield

    def abort(self, error: BaseException | str, errorcode: int = 1) -> NoReturn:
        """Print which rank failed and why, then abort every rank of :attr:`comm`.

        Never returns: this process ends with ``errorcode`` even where ``MPI_Abort``
        returns before the launcher has killed it.
        """
        abort_ranks(self.comm, error, errorcode)

    # -- internals --------------------------------------------------------------------

    def _check_layout(self, arrays: Mapping[str, Array], what: str) -> Layout:
        """The layout of ``arrays``, agreed with the other ranks the first time."""
        agreed = self._agreed.get(what)
        if agreed is None:
            self.check_same(arrays, what)
            self._fingerprints[what] = fingerprint(arrays)
            return self._agreed[what]
        current = fingerprint(arrays)
        if current is not None and current == self._fingerprints.get(what):
            return agreed  # the usual step: a few microseconds, not a full description
        mine = layout(arrays)
        if mine == agreed:
            self._fingerprints[what] = current  # the same arrays in another dict order
        else:
            raise DistributedError(
                f"this rank's {what} changed after the ranks agreed on them: "
                f"{difference(agreed, mine, self.rank)}; the other ranks still exchange the "
                "old ones, so training cannot go on (keep the network's parameters fixed in "
                "keys, shapes and dtypes, or make a new DataParallel)"
            )
        return mine

    def _pack(self, what: str, group: frozenset[str], arrays: Sequence[Array]) -> Array:
        lib = library_for(namespace(*arrays))
        on_device = self._on_device(lib, arrays[0])
        key = (what, group, tuple(tuple(a.shape) for a in arrays), on_device)
        buffer = lib.pack(arrays, self._buffers.get(key), device=on_device)
        self._buffers[key] = buffer
        return buffer

    def _unpack(self, buffer: Any, arrays: Sequence[Array]) -> list[Array]:
        return library_for(namespace(*arrays)).unpack(buffer, arrays)

    def _on_device(self, lib: Any, array: Array) -> bool:
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
