"""Tests that run on two MPI ranks at once: ``mpiexec -n 2 python -m pytest tests/mpi``.

Every rank runs every test, in the same order, and the tests call collectives together
(``nox -s mpi`` does this).  In a plain single-process ``pytest`` run they are skipped
without touching MPI; with ``XPROP_REQUIRE_MPI=1`` (the ``mpi`` session) that is an error,
so a session that ran nothing cannot pass.  Each rank asserts on its own results; a failure
on one rank only leaves the other waiting, which ``MPIEXEC_TIMEOUT`` turns into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The process count the launcher announced (MPICH/Hydra and Slurm: PMI_SIZE; Open MPI:
# OMPI_COMM_WORLD_SIZE), read without initialising MPI in a plain pytest run.
LAUNCHED = int(os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or 1)
HOW = "run them with: mpiexec -n 2 python -m pytest tests/mpi (or nox -s mpi)"
# This process's rank (MPICH/Hydra: PMI_RANK; Open MPI: OMPI_COMM_WORLD_RANK).
RANK = int(os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)


@pytest.hookimpl(trylast=True)  # after the terminal plugin has made its reporter
def pytest_configure(config: pytest.Config) -> None:
    # Every rank runs every test and prints its own report; the ranks after 0 write their
    # "=== ... ===" lines (the headers and the closing "N passed in Ts") as "[rank R] ..."
    # lines instead, so that whoever counts closing lines (.ci/run) counts the tests once,
    # while a failure on one rank only is still printed in full.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if RANK == 0 or reporter is None:
        return
    write_line = reporter.write_line

    def write_sep(sep: str, title: str | None = None, **markup: object) -> None:
        write_line(f"[rank {RANK}] {title or ''}".rstrip())

    reporter.write_sep = write_sep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The hook sees every collected test; only this folder's need two ranks.
    here = Path(__file__).resolve().parent
    ours = [item for item in items if here in Path(item.path).resolve().parents]
    if LAUNCHED == 2 or not ours:
        return
    why = f"these tests need exactly 2 MPI ranks, this run has {LAUNCHED}; {HOW}"
    if os.environ.get("XPROP_REQUIRE_MPI") == "1":
        raise pytest.UsageError(f"XPROP_REQUIRE_MPI=1 but {why}")
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def dp():
    """A :class:`~xprop.distributed.DataParallel` on COMM_WORLD (2 ranks), new per test."""
    from xprop.distributed import DataParallel

    return DataParallel()
