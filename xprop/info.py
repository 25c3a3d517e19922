"""What a bug report needs: the versions, the machine, the backends that run here, the settings.

:func:`show_versions` (and ``python -m xprop info``) prints Python, the OS, the CPU and the
GPUs ``nvidia-smi`` sees, xprop and its dependencies with NumPy's BLAS, then every registered
backend: its library's version, whether it can run here, on which devices, and what the
library knows beyond that (the CUDA runtime, GPU names: :meth:`ArrayLibrary.version_info
<xprop.libraries.ArrayLibrary.version_info>`), then the backend selected now and the
``XPROP_*`` environment variables in force.  :func:`versions` returns the same as a dict.

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

__all__ = ["show_versions", "versions"]

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
        deps = config["Build Dependencies"]
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
        if lib.install_hint:
            facts["install"] = lib.install_hint
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
