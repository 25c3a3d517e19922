"""The abort policy: a rank that fails alone ends every rank, naming itself and the error.

A collective waits until every rank has called it, so a rank that raises (or exits) while
the others wait in their next collective would leave them waiting forever.  Instead the
failing rank prints ``xprop.distributed: rank R of N failed: Error: message; aborting all
N ranks`` to stderr and calls ``comm.Abort``: through :func:`abort_on_error` around code
that catches its exceptions, or through the ``sys.excepthook`` that
:func:`install_excepthook` sets for the exceptions nobody catches.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

__all__ = ["ABORT_GRACE_S", "abort", "abort_on_error", "install_excepthook"]

#: Seconds between printing why a rank aborts and aborting (for the message to get out).
ABORT_GRACE_S = 0.5


def abort(comm: Any, error: BaseException | str, errorcode: int = 1) -> NoReturn:
    """Print which rank of ``comm`` failed and why, then abort every rank of ``comm``.

    Never returns: this process ends with ``errorcode`` even where ``MPI_Abort`` returns
    before the launcher has killed it.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    what = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    print(
        f"xprop.distributed: rank {rank} of {size} failed: {what}; aborting all {size} ranks",
        file=sys.stderr,
        flush=True,
    )
    # The launcher forwards each rank's output through a pipe and stops reading when it
    # tears the job down: give it a moment, or the message may be lost (MPICH's Hydra).
    time.sleep(ABORT_GRACE_S)
    comm.Abort(errorcode)
    # MPI_Abort may return before the launcher kills this process (MPICH does): nothing
    # of this rank's program may run after it.
    os._exit(errorcode)


@contextlib.contextmanager
def abort_on_error(
    comm: Any, expected: tuple[type[BaseException], ...] = (), errorcode: int = 1
) -> Iterator[None]:
    """Abort every rank of ``comm``, naming this one and the error, when the block raises.

    Prints the traceback (the message alone for the ``expected`` exception types), then
    :func:`abort`.  ``sys.exit(code)`` inside the block counts as a failure (without a
    traceback).  With one rank the exception propagates as usual; ``SystemExit(0)``
    always does.
    """
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() == 1 or (isinstance(exc, SystemExit) and not exc.code):
            raise
        if not isinstance(exc, (SystemExit, *expected)):
            traceback.print_exc()
        abort(comm, exc, errorcode)


# The abort of the newest DataParallel: the hook aborts its communicator.
_hooked: list[Callable[[BaseException], Any]] = []


def install_excepthook(abort_all: Callable[[BaseException], Any]) -> None:
    """Call ``abort_all(exc)`` after the usual traceback when an exception nobody catches
    ends this process.

    The hook is installed once per process; a later call only replaces ``abort_all`` (the
    newest :class:`~xprop.distributed.DataParallel`'s communicator is the one aborted).
    """
    _hooked[:] = [abort_all]
    if getattr(sys.excepthook, "_xprop_abort", False):
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        previous(exc_type, exc, tb)  # the usual traceback first
        if _hooked:
            _hooked[0](exc)

    # A marker attribute on the function (type checkers know no attributes of functions).
    hook._xprop_abort = True  # type: ignore[attr-defined]
    sys.excepthook = hook
