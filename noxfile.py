"""Test matrix: the whole suite once per array backend, plus lint, docs and the rest.

``nox`` runs every session that can run here; ``nox -l`` lists them; ``nox -s torch`` runs
one.  Each backend session installs xprop with the ``test`` extra and that backend's extra
and selects the backend with ``XPROP_BACKEND``, so every gradient test runs on it.  The
backends come from ``tests/backend_list.py``, the one list the tests and the benchmarks read
too.  The examples run once, in the array_api_strict session (``tests/test_examples.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import nox

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
import backend_list  # pure data: nox's environment has no xprop

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False

EXTRA = backend_list.BACKENDS  # backend name -> pip extra that installs its library
CPU_EXTRAS = [EXTRA[name] for name in backend_list.CPU]  # every CPU backend's library
LIGHT_EXTRAS = [EXTRA[name] for name in backend_list.LIGHT]

# The sessions share the machine's cores: pytest-xdist runs the tests on every core, each
# worker with one BLAS thread (several threads per worker would only stall each other).
WORKERS = os.environ.get("XPROP_TEST_WORKERS") or ("2" if (os.cpu_count() or 1) >= 2 else "0")
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _install(session: nox.Session, *extras: str | None) -> None:
    spec = ".[" + ",".join(("test", *(e for e in extras if e))) + "]"
    session.install(spec)


def _pytest(session: nox.Session, backend: str, workers: str = WORKERS) -> None:
    # JAX compiles the same small programs test after test (each new network, each new
    # jit): with a compilation cache for this run, each is compiled once, by either worker.
    # A fresh folder every run, removed after: nothing carries over from an earlier run.
    cache = tempfile.mkdtemp(prefix="xprop-jax-cache-")
    jax_cache = {
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    try:
        session.run(
            "pytest",
            *("-n", workers),
            *session.posargs,
            env={"XPROP_BACKEND": backend, **ONE_THREAD, **jax_cache},
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _make_backend_session(backend: str, extra: str | None) -> None:
    @nox.session(name=backend)
    def tests(session: nox.Session) -> None:
        _install(session, extra or "")
        _pytest(session, backend)

    tests.__doc__ = f"Whole test suite with XPROP_BACKEND={backend}."


for _name in backend_list.CPU:
    _make_backend_session(_name, EXTRA[_name])


def _cuda_major() -> int | None:
    """The CUDA version the driver supports (from nvidia-smi), or None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)", out)
    return int(match.group(1)) if match else None


@nox.session(name="cupy")
def cupy(session: nox.Session) -> None:
    """Whole test suite on the GPU with XPROP_BACKEND=cupy (skipped without a CUDA device)."""
    # Decide before downloading several hundred MB of CUDA wheels.
    major = _cuda_major()
    if major is None:
        session.skip("no CUDA device: nvidia-smi is missing or found no GPU, so cupy cannot run")
    extra = os.environ.get("XPROP_CUPY_EXTRA") or ("cuda13" if major >= 13 else "cuda12")
    _install(session, extra)
    _pytest(session, "cupy", workers="0")  # one process on the GPU: no two compete for it


@nox.session
def agreement(session: nox.Session) -> None:
    """TwoLayerNet float64 gradients on every installed backend against NumPy's (<= 1e-12)."""
    _install(session, *CPU_EXTRAS)
    session.run("python", "examples/backend_agreement.py", env=ONE_THREAD)


@nox.session
def mpi(session: nox.Session) -> None:
    """Data parallelism on MPI: the collectives under mpiexec -n 2, then 1 vs 2 ranks."""
    _install(session, "mpi", *CPU_EXTRAS)
    env = {
        "OPENBLAS_NUM_THREADS": "1",  # one BLAS thread per rank: ranks share the cores
        "OMP_NUM_THREADS": "1",
        # JAX takes 75 % of a GPU at its first use: the two ranks (and the test process
        # that starts them) share one GPU, so each allocates what it uses instead.
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "MPIEXEC_TIMEOUT": "300",  # a hang fails in 5 minutes (the run takes under a minute)
        "XPROP_REQUIRE_MPI": "1",  # a distributed test that would skip fails instead
    }
    session.run("mpiexec", "-n", "2", "python", "-m", "pytest", "tests/mpi", env=env)
    session.run("pytest", "tests/test_distributed.py", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and mypy --strict on the package.

    mypy's settings are in pyproject.toml; it needs xprop's dependencies (NumPy's types),
    hence ".", and none of the optional array libraries (it never reads them).
    """
    session.install("ruff", "mypy", ".")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "xprop")


@nox.session
def docs(session: nox.Session) -> None:
    """The Sphinx site (docs/_build/html), warnings as errors; then every internal link.

    The build, offline, runs the example gallery and the chapter-5 and chapter-7 notebooks
    (and writes them as plain .ipynb files into the site); with XPROP_DATA_DIR unset, the
    MNIST parts are shown unexecuted.  The agreement table of the gallery lists every CPU
    backend, hence all their extras.  Sphinx's -W misses some dead links (a Markdown link to
    a file outside the site, viewcode's back-links): docs/_ext/check_links.py reads the HTML
    written, and the READMEs' links into docs/ against it.  Then the tests that need Sphinx
    or the built site (no other session installs Sphinx): the gallery's machinery, the
    pages' source links, the site's notebooks.
    """
    _install(session, "docs", *CPU_EXTRAS)
    build = ("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run(*build, env=ONE_THREAD)  # the gallery's and notebooks' small matrices
    markdown = ("README.md", "benchmarks/README.md")  # read on GitHub, linking to docs/
    session.run("python", "docs/_ext/check_links.py", "docs/_build/html", *markdown)
    tests = ("tests/test_examples.py", "tests/test_docs.py", "tests/test_notebook.py")
    select = ("-k", "gallery or test_docs or built_site")
    env = {"XPROP_BUILT_SITE": "docs/_build/html"}  # the built_site tests read this build
    session.run("pytest", *tests, *select, *session.posargs, env=env)


@nox.session
def notebook(session: nox.Session) -> None:
    """The chapter-5 and chapter-7 notebooks run on numpy and array_api_strict, as .ipynb too.

    notebooks/ch05_backprop.md and ch07_cnn.md are executed top to bottom (short training
    runs), and each executed notebook is checked in the plain .ipynb form the documentation
    offers for download (tests/test_notebook.py).
    """
    _install(session, "notebook", *LIGHT_EXTRAS)
    # With XPROP_BACKEND empty, tests/test_notebook.py runs each notebook on every light
    # backend: four kernels, two at a time.
    env = {"XPROP_BACKEND": "", **ONE_THREAD}
    session.run("pytest", "tests/test_notebook.py", "-n", WORKERS, *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark smoke run: every row's one-step check must pass (timings are not judged)."""
    _install(session, *LIGHT_EXTRAS)
    session.run(
        "python",
        "benchmarks/bench_train.py",
        "--quick",
        "--backend",
        ",".join(backend_list.LIGHT),
        "--modes",
        "step,loop,eval",
    )
    session.run("python", "benchmarks/bench_conv.py", "--quick", "--rows", "book,xprop-numpy")
