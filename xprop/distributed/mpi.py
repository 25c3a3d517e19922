"""Reaching MPI: importing mpi4py, and asking the MPI library whether it reads GPU memory.

mpi4py is imported when a :class:`~xprop.distributed.DataParallel` is made, never when
:mod:`xprop.distributed` is imported: a single-process program must not need MPI.
Whether the MPI library is CUDA-aware is asked once per process, or stated with
``$XPROP_MPI_CUDA_AWARE`` where the library cannot be asked.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from xprop.distributed.errors import DistributedError

__all__ = ["ENV_CUDA_AWARE", "INSTALL_HINT", "import_mpi", "mpi_is_cuda_aware"]

#: How to get MPI, for error messages.
INSTALL_HINT = (
    "pip install 'xprop[mpi]' (mpi4py with the MPICH library and its mpiexec); on a "
    "cluster, build mpi4py against the cluster's MPI instead: "
    "pip install --no-binary=mpi4py mpi4py"
)
#: Set to 1 or 0 to say whether MPI reads GPU memory, where the library cannot tell.
ENV_CUDA_AWARE = "XPROP_MPI_CUDA_AWARE"


def import_mpi() -> Any:
    """``mpi4py.MPI``, or a :class:`DistributedError` naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py found no MPI library
        raise DistributedError(
            f"data-parallel training needs MPI, which is not available here "
            f"({type(exc).__name__}: {exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return MPI


_cuda_aware: bool | None = None  # the library's answer, asked once per process


def mpi_is_cuda_aware() -> bool:
    """Whether the MPI library reads GPU memory itself (a CUDA-aware build).

    ``$XPROP_MPI_CUDA_AWARE`` (``1`` or ``0``) decides when set; otherwise the loaded MPI
    library is asked (``MPIX_Query_cuda_support``, which Open MPI and MPICH provide);
    an MPI that cannot be asked counts as not CUDA-aware.

    Raises :class:`DistributedError` for a ``$XPROP_MPI_CUDA_AWARE`` other than 0 or 1.
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
    """Ask the loaded libmpi's ``MPIX_Query_cuda_support``; False where it cannot be asked."""
    import_mpi()  # loads the MPI library into this process
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
