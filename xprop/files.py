"""Writing files all or nothing: the one way xprop (and its examples) write results.

:func:`write_atomically` writes into a temporary file in the target's folder and renames it
into place only when the write succeeded: a crash, a full disk or an exception leaves the
old file (or no file), never half of a new one.  Checkpoints, run records and figures all go
through it.

The target is what the path names after following symbolic links (the link stays a link);
an existing target keeps its permissions, and one that is not a regular file (a folder, a
FIFO, a device such as ``/dev/null``) is refused rather than replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["check_target", "file_kind", "write_atomically"]

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


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words: ``'a FIFO'``, ``'a character device'``, ..."""
    kinds = [
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ]
    return next((word for test, word in kinds if test(mode)), f"file type {stat.S_IFMT(mode):#o}")


def check_target(path: str | os.PathLike[str], what: str = "the file") -> Path:
    """The file that writing ``path`` replaces: symbolic links followed, checked writable.

    Raises
    ------
    ValueError
        ``path`` is empty, or names something other than a regular file (a FIFO, a device).
    IsADirectoryError
        ``path`` is a folder.
    """
    if not os.fspath(path):
        raise ValueError(f"cannot write {what}: the path is empty; give a file name")
    # realpath follows every link (a dangling one to the file it would create).
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target  # a new file (its folder is the caller's to check)
    except NotADirectoryError:
        return target  # a file in place of a folder: the write names the problem
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(
            f"cannot write {what} to {path}: it is a folder; give a file name inside it"
        )
    if not stat.S_ISREG(mode):
        shown = str(path) if str(target) == os.path.abspath(path) else f"{path} -> {target}"
        raise ValueError(
            f"cannot write {what} to {shown}: it exists and is {file_kind(mode)}, not a "
            "regular file, and would be replaced; choose another path"
        )
    return target


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)``, then move the file it wrote to ``path`` atomically.

    ``write`` must write the whole file at the path it is given (``tmp.write_text(...)``,
    ``fig.savefig(tmp, format="png")``).  The data are flushed to disk before the rename,
    and the rename itself is made durable where the system allows.

    A symbolic link is followed: its target is replaced, the link stays.  An existing file
    keeps its permission bits; a new one gets ``0o666`` less the umask, as ``open`` gives.

    Raises :func:`check_target`'s errors before anything is written, and whatever
    ``write`` or the file system raises (``OSError`` for a full disk or an unwritable
    folder); the temporary file is removed then and ``path`` is left as it was.
    """
    target = check_target(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_current_umask()
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the bytes are on disk before the name points at them
            os.fsync(f.fileno())
        # mkstemp made it private (0600): give it the old file's mode, or what an ordinary
        # new file would have.
        os.chmod(tmp, mode)
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
