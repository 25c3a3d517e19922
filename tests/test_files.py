"""xprop.files: the umask is read, never changed where the system can report it."""

from __future__ import annotations

import builtins
import os
import stat
import sys

import pytest

from xprop import files
from xprop.files import write_atomically

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="no POSIX umask on Windows")


@pytest.fixture
def umask_027():
    """The process umask set to 0o027 for the test, then put back."""
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


@posix_only
def test_the_umask_is_read_as_it_is_now(umask_027):
    assert files._current_umask() == umask_027


@posix_only
def test_without_proc_the_umask_is_read_by_setting_it_back(umask_027, monkeypatch):
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    assert files._current_umask() == umask_027
    monkeypatch.undo()
    assert files._current_umask() == umask_027  # and it is still the process umask


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc on Linux only")
def test_on_linux_the_umask_is_read_without_setting_it(monkeypatch):
    def no_umask(mask):
        raise AssertionError(f"os.umask({mask:#o}) was called")

    monkeypatch.setattr(os, "umask", no_umask)
    assert 0 <= files._current_umask() <= 0o777


@posix_only
def test_a_written_file_follows_the_umask_of_the_moment(tmp_path, umask_027):
    target = tmp_path / "out.txt"
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # 0o666 & ~0o027


@posix_only
def test_a_symlink_is_followed_and_stays_a_symlink(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomically(link, lambda tmp: tmp.write_text("new"))
    assert link.is_symlink()
    assert real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made.txt")
    write_atomically(dangling, lambda tmp: tmp.write_text("made"))
    assert dangling.is_symlink()
    assert (tmp_path / "made.txt").read_text() == "made"


@posix_only
def test_a_fifo_or_a_device_is_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"cannot write .*fifo: it exists and is a FIFO, not a"):
        write_atomically(fifo, lambda tmp: tmp.write_text("x"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match=r"/dev/null: it exists and is a character device"):
        write_atomically(link, lambda tmp: tmp.write_text("x"))
    assert link.is_symlink()
    with pytest.raises(IsADirectoryError, match=r"cannot write .*: it is a folder"):
        write_atomically(tmp_path, lambda tmp: tmp.write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"]  # no temp files


@posix_only
def test_rewriting_a_file_keeps_its_mode(tmp_path, umask_027):
    target = tmp_path / "secret.txt"
    target.write_text("old")
    target.chmod(0o600)
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    target.chmod(0o644)
    write_atomically(target, lambda tmp: tmp.write_text("newer"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_text() == "newer"
