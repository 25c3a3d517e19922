"""What a bug report needs: the versions, the machine, the backends that run here, the settings.

:func:`show_versions` (and ``python -m xprop info``) prints Python, the OS, the CPU and the
GPUs ``nvidia-smi`` sees, xprop and its dependencies with NumPy's BLAS, then every registered
backend: its library's version, whether it can run here, on which devices, and what the
library knows beyond that (the CUDA runtime, GPU names: :meth:`ArrayLibrary.version_info
<xprop.libraries.ArrayLibrary.version_info>`), then the backend selected now and the
``XPROP_*`` environment variables in force.  :func:`versions` returns the same as a dict.

:func:`busy_cpu_note` says, in one line, when the CPU is shared and the BLAS or OpenMP
libraries run several threads, which then stall each other (the examples print it once).

Nothing here raises because a library is broken: a library that fails to import, or fails
to answer one question, is reported with its error in that place.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from xprop._version import __version__
from xprop.backend import _make, get_backend
from xprop.libraries import BackendError, known_backends, library

__all__ = ["busy_cpu_note", "note_busy_cpu", "show_versions", "versions"]

#: Distributions reported with xprop: its dependencies, then what its extras add.
DEPENDENCIES = (
    "numpy",
    "array-api-compat",
    "safetensors",
    "threadpoolctl",
    "pooch",
    "matplotlib",
)

NVIDIA_SMI_TIMEOUT_S = 20

#: A 1-minute load average above this counts as other work on the CPU (as the benchmarks do).
BUSY_LOAD = 0.5

#: Environment variables that set the thread count of the BLAS and OpenMP libraries.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def versions() -> dict[str, Any]:
    """Everything :func:`show_versions` prints, as a dict of sections (JSON-serialisable).

    Returns
    -------
    dict
        ``"xprop"``, ``"system"``, ``"dependencies"``, ``"blas"``, ``"backends"`` (one
        dict per registered backend: ``"status"`` is ``"usable"``, ``"not usable"``,
        ``"not installed"`` or ``"broken"``; then the library's facts or ``"error"``),
        ``"selected backend"`` and ``"environment"``.  Loads every installed backend
        library (importing torch or jax takes seconds).
    """
    # The backends first: their imports load the BLAS and OpenMP libraries that the
    # "blas" section then lists (torch brings its own).
    backends = {name: _backend(name) for name in known_backends()}
    return {
        "xprop": {"version": __version__, "path": str(Path(__file__).parent)},
        "system": _system(),
        "dependencies": {name: _distribution(name) for name in DEPENDENCIES},
        "blas": _blas(),
        "backends": backends,
        "selected backend": _selected(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("XPROP_")},
    }


def show_versions(file: IO[str] | None = None, *, as_json: bool = False) -> None:
    """Print what a bug report needs (see the module's description); paste it into the report.

    Parameters
    ----------
    file : text stream, optional
        Where to print (default ``sys.stdout``).
    as_json : bool
        Print :func:`versions` as JSON instead of the readable text.

    Never raises because an array library is missing or broken: its error is printed
    in its place.
    """
    out = sys.stdout if file is None else file
    report = versions()
    if as_json:
        print(json.dumps(report, indent=2), file=out)
        return
    print(f"xprop {report['xprop']['version']} ({report['xprop']['path']})", file=out)
    _section(out, "system", report["system"])
    _section(out, "dependencies", report["dependencies"])
    print("\nblas and openmp (numpy's, and those other libraries loaded)", file=out)
    for line in report["blas"]:
        print(f"  {line}", file=out)
    print("\nbackends", file=out)
    width = max(len(n) for n in report["backends"])
    for name, facts in report["backends"].items():
        facts = dict(facts)
        status = facts.pop("status")
        detail = facts.pop("error", None)
        print(f"  {name:<{width}}  {status}" + (f": {detail}" if detail else ""), file=out)
        for key, value in facts.items():
            print(f"  {'':<{width}}    {key}: {value}", file=out)
    print(f"\nselected backend\n  {report['selected backend']}", file=out)
    env = report["environment"]
    print("\nenvironment", file=out)
    if not env:
        print("  no XPROP_* variable is set", file=out)
    for key, value in env.items():
        print(f"  {key}={value}", file=out)


def busy_cpu_note(
    load: float | None = None, cores: int | None = None, threads: int | None = None
) -> str | None:
    """A note saying that the CPU is shared and several BLAS threads will stall, or None.

    OpenBLAS (NumPy's BLAS) and OpenMP run one thread per core by default, and every call
    waits for its slowest thread: when other processes hold some of the cores, those threads
    wait for a turn and a run takes several times as long (the book's ``train_mnist.py`` on a
    busy 2-core machine: 84-168 s with two threads, 16-31 s with one).  The note says so when the
    1-minute load average exceeds ``BUSY_LOAD`` (0.5) and the load plus the threads exceed the
    cores; it changes nothing itself.

    Parameters
    ----------
    load : float, optional
        The 1-minute load average (default: ``os.getloadavg()``; None where the OS has none,
        as on Windows, and then no note).
    cores : int, optional
        The cores this process may use (default: its CPU affinity, else ``os.cpu_count()``).
    threads : int, optional
        The most threads a BLAS or OpenMP library loaded here runs (default: what
        threadpoolctl reports, else the ``*_NUM_THREADS`` variables, else ``cores``).

    Returns
    -------
    str or None
        The note, with the load, the cores, the threads and the fix; None when nothing is
        oversubscribed (or the load cannot be read).
    """
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this OS
            return None
    cores = cores or _usable_cores()
    threads = threads or _compute_threads(cores)
    if threads <= 1 or load <= BUSY_LOAD or load + threads <= cores:
        return None
    return (
        f"note: the CPU is busy (1-minute load average {load:.2f} on {cores} cores: other "
        f"programs, or a run that just ended) and the BLAS runs {threads} threads, which stall "
        "each other when they share the cores; this run may take several times longer.\n"
        "      One thread: OPENBLAS_NUM_THREADS=1 before the command (MKL_NUM_THREADS=1 for "
        "MKL, OMP_NUM_THREADS=1 for PyTorch), or threadpoolctl.threadpool_limits(1) in Python "
        "(docs/performance.md)."
    )


_noted = False


def note_busy_cpu(
    file: IO[str] | None = None,
    *,
    load: float | None = None,
    cores: int | None = None,
    threads: int | None = None,
) -> str | None:
    """Print :func:`busy_cpu_note` (to ``sys.stderr`` by default) the first time it has one
    in this process, and nothing after that; returns the note printed, or None.

    ``load``, ``cores`` and ``threads`` go to :func:`busy_cpu_note` (default: this machine's).
    """
    global _noted
    if _noted:
        return None
    note = busy_cpu_note(load, cores, threads)
    if note is not None:
        _noted = True
        print(note, file=sys.stderr if file is None else file, flush=True)
    return note


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # containers, taskset
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _compute_threads(cores: int) -> int:
    """The most threads of a BLAS or OpenMP library loaded in this process."""
    try:
        from threadpoolctl import threadpool_info

        counts = [int(pool.get("num_threads") or 1) for pool in threadpool_info()]
        if counts:
            return max(counts)
    except Exception:  # not installed, or it failed: the environment decides
        pass
    for key in THREAD_VARIABLES:
        value = os.environ.get(key, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return cores


def _section(out: IO[str], title: str, facts: dict[str, str]) -> None:
    print(f"\n{title}", file=out)
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"  {key:<{width}}  {value}", file=out)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


# --------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------


def _system() -> dict[str, str]:
    cores = os.cpu_count()
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        usable = cores
    return {
        "python": f"{platform.python_version()} ({platform.python_implementation()}) "
        f"{sys.executable}",
        "os": platform.platform(),
        "cpu": f"{_cpu_name()}, {cores} logical cores ({usable} usable by this process)",
        "gpus (nvidia-smi)": _nvidia_smi(),
    }


def _cpu_name() -> str:
    """The CPU's model name where the OS tells it, else the machine type (``x86_64``)."""
    try:
        if sys.platform.startswith("linux"):
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        elif sys.platform == "darwin":
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            if out.stdout.strip():
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown"


def _nvidia_smi() -> str:
    """GPU names, memory, the driver and the CUDA version it supports; or why there are none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "none found (nvidia-smi is not on PATH)"
    try:
        gpus = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
        header = subprocess.run(
            [exe], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        ).stdout
    except subprocess.CalledProcessError as exc:
        return f"nvidia-smi failed (exit {exc.returncode}): {(exc.stderr or exc.stdout).strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {_error(exc)}"
    # The header's "CUDA Version" is the newest CUDA the driver supports.
    cuda = next(
        (
            line.split("CUDA Version:")[1].strip(" |")
            for line in header.splitlines()
            if "CUDA Version:" in line
        ),
        "unknown",
    )
    rows = [", ".join(p.strip() for p in row.split(",")) for row in gpus.strip().splitlines()]
    rows = rows or ["no GPU listed"]
    return "; ".join(rows) + f" (index, name, memory, driver); driver's CUDA: {cuda}"


# --------------------------------------------------------------------------------------
# Python packages
# --------------------------------------------------------------------------------------


def _distribution(name: str) -> str:
    """The installed version of a distribution, read from its metadata (nothing imported)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    except Exception as exc:  # unreadable metadata must not end the report
        return f"unknown ({_error(exc)})"


def _distributions_of(module: str) -> str | None:
    """``"torch 2.4.0"`` for the distribution(s) that install a top-level module, else None."""
    if not module:
        return None
    try:
        names = importlib.metadata.packages_distributions().get(module.split(".")[0], [])
    except Exception:
        return None
    return ", ".join(f"{n} {_distribution(n)}" for n in sorted(set(names))) or None


def _blas() -> list[str]:
    """One line per BLAS or OpenMP library loaded in this process (threadpoolctl), or NumPy's
    build configuration when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return _numpy_build_blas()
    try:
        pools = threadpool_info()
    except Exception as exc:
        return [f"threadpoolctl failed: {_error(exc)}", *_numpy_build_blas()]
    lines = []
    for pool in pools:
        extra = [pool.get("user_api", "")]
        for key in ("threading_layer", "architecture"):
            if pool.get(key):
                extra.append(str(pool[key]))
        extra.append(f"{pool.get('num_threads')} threads")
        where = Path(str(pool.get("filepath", ""))).name
        lines.append(
            f"{pool.get('internal_api')} {pool.get('version') or ''} "
            f"({', '.join(e for e in extra if e)}) {where}".replace("  ", " ")
        )
    return lines or ["threadpoolctl found no BLAS or OpenMP library loaded"]


def _numpy_build_blas() -> list[str]:
    """NumPy's BLAS and LAPACK as it was built (threadpoolctl reports what is loaded)."""
    try:
        import numpy as np

        with contextlib.redirect_stdout(io.StringIO()):  # some versions print as well
            config = np.show_config(mode="dicts")
        deps: Any = config["Build Dependencies"]  # a dict of dicts
    except Exception as exc:
        return [f"numpy's build configuration is unavailable: {_error(exc)}"]
    lines = []
    for role in ("blas", "lapack"):
        dep = deps.get(role, {})
        lines.append(
            f"numpy {role}: {dep.get('name', '?')} {dep.get('version', '?')} "
            f"(from numpy.show_config; pip install threadpoolctl for the loaded libraries)"
        )
    return lines


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


def _backend(name: str) -> dict[str, str]:
    """Status of one registered backend, and the facts its library gives; never raises."""
    lib = library(name)
    try:
        xp = lib.namespace()
    except ImportError as exc:
        facts = {"status": "not installed", "error": _error(exc)}
        if lib.install_command():
            facts["install"] = lib.install_command()
        return facts
    except Exception as exc:  # an install that imports halfway: report, never raise
        facts = {"status": "broken", "error": _error(exc)}
        installed = _distributions_of(lib.module)
        if installed:
            facts["installed"] = installed
        return facts

    facts = {"status": "usable"}
    try:
        # The same checks as get_backend: the library's own, then a float32 array on the
        # library's default device.
        _make(name, None, "float32")
    except BackendError as exc:
        facts.update(status="not usable", error=str(exc))
    except Exception as exc:
        facts.update(status="broken", error=_error(exc))
    try:
        facts.update(lib.version_info(xp))
    except Exception as exc:
        facts["version"] = f"unknown: version_info() failed with {_error(exc)}"
    for key, ask in (("devices", lib.devices), ("default device", lib.default_device)):
        try:
            answer = ask(xp)
            facts[key] = ", ".join(map(str, answer)) if isinstance(answer, list) else str(answer)
        except Exception as exc:
            facts[key] = f"unknown: {_error(exc)}"
    return facts


def _selected() -> str:
    """The backend that ``get_backend()`` gives now, or the error it raises."""
    try:
        return get_backend().describe()
    except Exception as exc:
        return f"error: {_error(exc)}"
