"""xprop.show_versions and ``python -m xprop info``: complete; a broken library never raises."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import xprop
import xprop.info
from xprop.__main__ import main
from xprop.info import busy_cpu_note, note_busy_cpu, show_versions, versions
from xprop.libraries import ArrayLibrary, known_backends, library, unregister_backend

ROOT = Path(xprop.__file__).resolve().parents[1]
# Each built-in library, by the distribution pip installs it from (cupy: either CUDA wheel).
DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "jax": ("jax",),
    "array_api_strict": ("array-api-strict",),
    "cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy"),
}


def text() -> str:
    out = io.StringIO()
    show_versions(out)
    return out.getvalue()


@pytest.fixture
def registered():
    """Register ArrayLibrary subclasses for one test; unregistered afterwards."""
    names = []

    def register(cls: type[ArrayLibrary]) -> None:
        xprop.register_backend(cls)
        names.append(cls.name)

    yield register
    for name in names:
        unregister_backend(name)


def test_report_names_python_os_xprop_and_dependencies():
    out = text()
    assert out.startswith(f"xprop {xprop.__version__} ")
    assert platform.python_version() in out
    assert platform.platform() in out
    assert f"numpy             {importlib.metadata.version('numpy')}" in out
    assert f"array-api-compat  {importlib.metadata.version('array-api-compat')}" in out
    assert "logical cores" in out
    assert "gpus (nvidia-smi)" in out


def test_every_registered_backend_has_a_status():
    report = versions()["backends"]
    assert list(report) == known_backends()
    statuses = {"usable", "not usable", "not installed", "broken"}
    assert all(facts["status"] in statuses for facts in report.values())
    # NumPy is a dependency: it always runs, on the CPU.
    assert report["numpy"]["status"] == "usable"
    assert report["numpy"]["devices"] == "cpu"
    # Usable here means what get_backend says: the same set as available_backends().
    usable = [name for name, facts in report.items() if facts["status"] == "usable"]
    assert usable == xprop.available_backends()


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_library_version_is_the_installed_distribution(name):
    lib = library(name)
    try:
        xp = lib.namespace()
    except ImportError:
        pytest.skip(f"{name} is not installed")
    installed = []
    for dist in DISTRIBUTIONS[name]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            installed.append(importlib.metadata.version(dist))
    assert lib.version_info(xp)["version"] in installed
    assert versions()["backends"][name]["version"] in installed


def test_torch_reports_its_cuda_build():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    facts = versions()["backends"]["torch"]
    assert facts["cuda runtime"] == (torch.version.cuda or "none (a CPU build)")
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in facts["gpus"]


def test_jax_reports_x64_mode():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    facts = versions()["backends"]["jax"]
    assert facts["x64 mode"] == ("on" if jax.config.read("jax_enable_x64") else "off")
    assert facts["jaxlib"] == importlib.metadata.version("jaxlib")


def test_a_library_that_raises_on_import_is_reported_broken(registered):
    class Broken(ArrayLibrary):
        name = "broken_lib"
        module = "numpy"  # installed, so the report can name the distribution

        def load(self):
            raise RuntimeError("libbroken.so: undefined symbol cblas_sgemm")

    registered(Broken)
    facts = versions()["backends"]["broken_lib"]
    assert facts["status"] == "broken"
    assert facts["error"] == "RuntimeError: libbroken.so: undefined symbol cblas_sgemm"
    assert facts["installed"] == f"numpy {importlib.metadata.version('numpy')}"
    out = text()
    assert "  broken_lib        broken: RuntimeError: libbroken.so: undefined symbol" in out
    # the built-in libraries are all still reported
    assert set(known_backends()) <= set(versions()["backends"])


def test_a_missing_library_is_reported_with_its_install_hint(registered):
    class Missing(ArrayLibrary):
        name = "missing_lib"
        module = "missing_lib"
        install_hint = "pip install missing-lib"

        def load(self):
            import missing_lib  # noqa: F401  (not installed anywhere)

    registered(Missing)
    facts = versions()["backends"]["missing_lib"]
    assert facts == {
        "status": "not installed",
        "error": "ModuleNotFoundError: No module named 'missing_lib'",
        "install": "pip install missing-lib",
    }


def test_a_library_whose_questions_fail_is_reported_field_by_field(registered):
    numpy_xp = library("numpy").namespace()

    class Flaky(ArrayLibrary):
        name = "flaky_lib"
        module = "numpy"

        def load(self):
            return numpy_xp

        def version_info(self, xp):
            raise OSError("driver query failed")

        def devices(self, xp):
            raise RuntimeError("device enumeration failed")

    registered(Flaky)
    facts = versions()["backends"]["flaky_lib"]
    assert facts["status"] == "usable"  # it creates arrays on its default device
    assert facts["version"] == "unknown: version_info() failed with OSError: driver query failed"
    assert facts["devices"] == "unknown: RuntimeError: device enumeration failed"
    assert facts["default device"] == "cpu"


def test_a_library_that_cannot_create_arrays_is_not_usable(registered):
    numpy_xp = library("numpy").namespace()

    class NoDevice(ArrayLibrary):
        name = "nodevice_lib"
        module = "numpy"

        def load(self):
            return numpy_xp

        def check(self, xp):
            raise xprop.BackendError("no usable accelerator was found")

    registered(NoDevice)
    facts = versions()["backends"]["nodevice_lib"]
    assert facts["status"] == "not usable"
    assert facts["error"] == "no usable accelerator was found"
    assert facts["version"] == importlib.metadata.version("numpy")


def test_selected_backend_and_environment(monkeypatch):
    monkeypatch.setenv("XPROP_BACKEND", "array_api_strict")
    monkeypatch.setenv("XPROP_DTYPE", "float64")
    monkeypatch.setenv("XPROP_DEVICE", "device1")
    if "array_api_strict" not in xprop.available_backends():
        pytest.skip("array_api_strict is not installed")
    report = versions()
    assert report["selected backend"] == (
        "array_api_strict (array_api_strict.Device('device1'), float64)"
    )
    assert report["environment"]["XPROP_DTYPE"] == "float64"
    assert "  XPROP_DEVICE=device1" in text().splitlines()


def test_a_bad_selection_is_reported_not_raised(monkeypatch):
    monkeypatch.setenv("XPROP_BACKEND", "nope")
    report = versions()
    assert report["selected backend"].startswith("error: BackendError: XPROP_BACKEND='nope'")
    assert "unknown backend 'nope'" in report["selected backend"]
    assert report["environment"] == {"XPROP_BACKEND": "nope"} | {
        k: v for k, v in os.environ.items() if k.startswith("XPROP_") and k != "XPROP_BACKEND"
    }


def test_no_xprop_variable_says_so(monkeypatch):
    for key in [k for k in os.environ if k.startswith("XPROP_")]:
        monkeypatch.delenv(key)
    assert "\nenvironment\n  no XPROP_* variable is set\n" in text()


def test_blas_from_numpy_build_without_threadpoolctl(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import raises ImportError
    blas = versions()["blas"]
    assert blas[0].startswith("numpy blas: ")
    assert "pip install threadpoolctl" in blas[0]


def test_blas_lists_numpys_library_with_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))  # NumPy's BLAS is loaded
    apis = {pool["internal_api"] for pool in threadpoolctl.threadpool_info()}
    blas = versions()["blas"]
    assert apis
    assert all(any(line.startswith(api) for line in blas) for api in apis)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ if env is None else env)
    # The xprop under test, installed or not.
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), environment.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


def test_command_line_info():
    result = _run("-m", "xprop", "info")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"xprop {xprop.__version__} ")
    assert "\nbackends\n  numpy " in result.stdout


def test_command_line_info_json():
    result = _run("-m", "xprop", "info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["xprop"]["version"] == xprop.__version__
    assert report["backends"]["numpy"]["status"] == "usable"


def test_command_line_without_a_command_prints_the_help():
    """The whole help, with the commands, on stderr; status 2 (argparse's usage error)."""
    result = _run("-m", "xprop")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: python -m xprop [-h] COMMAND ...")
    assert "xprop's command line." in result.stderr
    assert "print the versions, devices and settings a bug report needs" in result.stderr
    assert "required" not in result.stderr  # not argparse's one-line complaint
    assert main([]) == 2


@pytest.mark.parametrize("args", [(), ("nope",), ("info", "--bad")])
def test_command_line_rejects_bad_commands(args):
    result = _run("-m", "xprop", *args)
    assert result.returncode == 2
    assert "usage: python -m xprop" in result.stderr


def test_without_any_optional_library():
    # None in sys.modules makes the import raise ImportError: as if never installed.
    code = (
        "import sys\n"
        "for name in ('torch', 'jax', 'cupy', 'array_api_strict', 'threadpoolctl', "
        "'matplotlib', 'pooch'):\n"
        "    sys.modules[name] = None\n"
        "import xprop\n"
        "xprop.show_versions()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROP_")}
    result = _run("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("cupy", "torch", "jax", "array_api_strict"):
        assert f"\n  {name:<16}  not installed: ModuleNotFoundError" in out, out
    assert "numpy             usable" in out
    assert "numpy blas: " in out
    assert "\nselected backend\n  numpy (cpu, float32)\n" in out


def test_cupy_reports_runtime_driver_and_gpus_from_its_runtime(monkeypatch):
    # A stand-in for CuPy's runtime module: the hook's logic, on a machine without a GPU.
    import types

    from xprop.libraries.cupy import CuPyLibrary

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver")

    runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: 12080,
        driverGetVersion=no_driver,
        getDeviceCount=lambda: 2,
        getDeviceProperties=lambda i: {"name": [b"NVIDIA H100 80GB HBM3", b"NVIDIA L4"][i]},
    )
    fake = types.SimpleNamespace(__version__="13.6.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert CuPyLibrary().version_info(xp=None) == {
        "version": "13.6.0",
        "cuda runtime": "12.8",
        "cuda driver": "unknown (RuntimeError: cudaErrorInsufficientDriver)",
        "gpus": "0 NVIDIA H100 80GB HBM3, 1 NVIDIA L4",
    }


# --------------------------------------------------------------------------------------
# The busy-CPU note the examples print (several BLAS threads on shared cores stall)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "cores", "threads"),
    [(1.9, 2, 2), (0.51, 2, 2), (4.5, 8, 4), (1.0, 1, 2)],
)
def test_busy_cpu_note_when_load_and_threads_exceed_the_cores(load, cores, threads):
    note = busy_cpu_note(load=load, cores=cores, threads=threads)
    assert note is not None
    assert note.startswith(f"note: the CPU is busy (1-minute load average {load:.2f} on {cores} ")
    assert f"the BLAS runs {threads} threads" in note
    # the fix, both ways
    assert "OPENBLAS_NUM_THREADS=1 before the command" in note
    assert "threadpoolctl.threadpool_limits(1)" in note


@pytest.mark.parametrize(
    ("load", "cores", "threads"),
    [
        (9.0, 2, 1),  # one thread: nothing to stall
        (0.5, 2, 2),  # a quiet machine (at most BUSY_LOAD)
        (0.0, 2, 2),
        (2.0, 8, 4),  # the threads have free cores
        (4.0, 8, 4),  # exactly enough cores
    ],
)
def test_no_busy_cpu_note_when_nothing_is_oversubscribed(load, cores, threads):
    assert busy_cpu_note(load=load, cores=cores, threads=threads) is None


@pytest.mark.parametrize(("threads", "expected"), [("1", "1 None"), ("2", "2 note")])
def test_busy_cpu_note_counts_the_threads_the_blas_runs(threads, expected):
    # The BLAS reads its thread count when it loads: a fresh process with the variables set.
    code = (
        "from xprop.info import _compute_threads, busy_cpu_note\n"
        "note = busy_cpu_note(load=100.0, cores=2)\n"
        "print(_compute_threads(64), note and note.split(':')[0])\n"
    )
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    result = _run("-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_note_busy_cpu_prints_once(monkeypatch):
    monkeypatch.setattr(xprop.info, "_noted", False)  # as in a new process
    out = io.StringIO()
    assert note_busy_cpu(out, load=0.1, cores=2, threads=2) is None  # quiet: nothing, yet
    assert out.getvalue() == ""
    note = note_busy_cpu(out, load=3.0, cores=2, threads=2)
    assert note is not None
    assert out.getvalue() == note + "\n"
    assert note_busy_cpu(out, load=3.0, cores=2, threads=2) is None  # once per process
    assert out.getvalue() == note + "\n"


def test_torch_install_hint_fits_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ``pip install 'xprop[torch]'`` pulls several GB of CUDA wheels on Linux:
    a machine without an NVIDIA GPU is told to install the CPU build first."""
    from xprop.libraries import torch as torch_library

    lib = torch_library.TorchLibrary()
    monkeypatch.setattr(torch_library, "has_nvidia_gpu", lambda: False)
    command = lib.install_command()
    assert command.startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert "xprop[torch]" in command
    monkeypatch.setattr(torch_library, "has_nvidia_gpu", lambda: True)
    assert lib.install_command() == "pip install 'xprop[torch]'"
