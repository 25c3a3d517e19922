"""Writing files all or nothing: the one way xprop (and its examples) write results.

:func:`write_atomically` writes into a temporary file in the target's folder and renames it
into place only when the write succeeded: a crash, a full disk or an exception leaves the
old file (or no file), never half of a new one.  Checkpoints, run records and figures all go
through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]

_umask_lock = threading.Lock()


def _current_umask() -> int:
    """The process umask (e.g. ``0o022``), read without changing it where the system allows.

    Linux reports it in the ``Umask:`` line of ``/proc/self/status``.  Elsewhere the only way
    to read it is to set it and set it back, which this does under a lock and through the
    private value ``0o077``: a file another thread creates in that instant comes out more
    private than asked, never less.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # not Linux (or a kernel older than 4.7): ask by setting it
    with _umask_lock:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)``, then move the file it wrote to ``path`` atomically.

    ``write`` must write the whole file at the path it is given (``tmp.write_text(...)``,
    ``fig.savefig(tmp, format="png")``).  The data are flushed to disk before the rename,
    and the rename itself is made durable where the system allows.

    Raises whatever ``write`` or the file system raises (``OSError`` for a full disk or an
    unwritable folder); the temporary file is removed then and ``path`` is left as it was.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the bytes are on disk before the name points at them
            os.fsync(f.fileno())
        # mkstemp made it private (0600); give it what an ordinary new file would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)  # atomic on POSIX and Windows
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename durable (POSIX only)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
