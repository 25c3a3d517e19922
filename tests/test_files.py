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
