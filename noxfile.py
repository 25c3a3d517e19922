"""Test matrix: the whole suite once per array backend, plus lint, docs and the rest.

``nox`` runs every session that can run here; ``nox -l`` lists them; ``nox -s torch`` runs
one.  Each backend session installs xprop with the ``test`` extra and that backend's extra
and selects the backend with ``XPROP_BACKEND``, so every gradient test runs on it.  The
backends come from ``tests/backend_list.py``, the one list the tests and the benchmarks read
too.  The examples run once, in the array_api_strict session (``tests/test_examples.py``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

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
    if EXTRA["torch"] not in extras or not _wants_cpu_torch():
        session.install(spec)
    elif session.venv_backend == "uv" and _uv_version() >= (0, 6, 9):
        session.install("--torch-backend=cpu", spec)  # torch from PyTorch's CPU index only
    else:  # pip (or an older uv): the CPU build first, then the extra finds it installed
        session.install("torch", "--index-url", TORCH_CPU_INDEX)
        session.install(spec)


# PyPI's torch for Linux is the CUDA build: with its nvidia-* libraries, about 4 GB in each
# session's environment and 6 GB in the installer's cache.  A machine without an NVIDIA GPU
# gets PyTorch's CPU build instead; one with a GPU gets PyPI's.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _wants_cpu_torch() -> bool:
    """Whether to install PyTorch's CPU build: on Linux without an NVIDIA GPU (elsewhere
    PyPI's torch is the CPU build already), unless the user chose: ``UV_TORCH_BACKEND`` set
    (uv applies it itself), or a constraint file in force (``UV_CONSTRAINT``,
    ``PIP_CONSTRAINT``) that pins torch, as ``.ci/run`` pins the CI machines' local wheel."""
    if not sys.platform.startswith("linux") or os.environ.get("UV_TORCH_BACKEND"):
        return False
    return not _constraints_pin_torch() and _cuda_major() is None


def _constraints_pin_torch() -> bool:
    paths = " ".join(os.environ.get(v, "") for v in ("UV_CONSTRAINT", "PIP_CONSTRAINT")).split()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if re.search(r"^\s*torch\s*(?:[=<>!~;@\[]|$)", text, re.MULTILINE):
            return True
    return False


def _uv_version() -> tuple[int, ...]:
    """The version of the uv nox installs with (``--torch-backend`` needs 0.6.9)."""
    try:
        from nox.virtualenv import UV_VERSION
    except ImportError:  # an older nox
        return (0,)
    return tuple(int(part) for part in UV_VERSION.release)


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


@functools.cache
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


@nox.session
def release(session: nox.Session) -> None:
    """The release a user installs: the sdist and wheel built (``python -m build``) and
    checked (``twine check --strict``, the files each must hold), the wheel installed with pip
    in a fresh virtual environment (numpy, no extra), and the sdist's ``train_mnist.py`` run
    there for 300 steps outside the source tree (with ``$XPROP_DATA_DIR``; without it, the
    sdist's ``two_by_two_sigmoid.py``, which needs no data)."""
    session.install("build", "twine")
    work = tempfile.mkdtemp(prefix="xprop-release-")
    try:
        dist = os.path.join(work, "dist")
        session.run("python", "-m", "build", "--outdir", dist, silent=True)
        sdist, wheel = _check_dist(session, dist)
        session.run("twine", "check", "--strict", sdist, wheel)
        venv = os.path.join(work, "venv")
        session.run("python", "-m", "venv", venv)
        python = os.path.join(venv, "Scripts" if sys.platform == "win32" else "bin", "python")
        session.run(python, "-m", "pip", "install", "--quiet", wheel, external=True)
        with tarfile.open(sdist) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(work, **safe)  # the sdist just built
        examples = os.path.join(work, os.path.basename(sdist).removesuffix(".tar.gz"), "examples")
        run = os.path.join(work, "run")  # outside the source tree: only the wheel's xprop
        os.mkdir(run)
        with session.chdir(run):
            check = "import xprop; assert 'site-packages' in xprop.__file__, xprop.__file__"
            session.run(python, "-c", check, external=True)  # the wheel's, not the source's
            if os.environ.get("XPROP_DATA_DIR"):
                args = ("train_mnist.py", "--iters", "300", "--plot", "", "--seed", "1")
            else:
                session.warn("no XPROP_DATA_DIR: two_by_two_sigmoid.py, not train_mnist.py")
                args = ("two_by_two_sigmoid.py",)
            out = session.run(
                python, os.path.join(examples, args[0]), *args[1:],
                env={**ONE_THREAD, "XPROP_BACKEND": "numpy"}, external=True, silent=True,
            )  # fmt: skip
            print(out, end="")
            if args[0] == "train_mnist.py":
                acc = re.search(r"test_acc=(\d\.\d+)", (out or "").splitlines()[-1])
                if acc is None or not 0.8 < float(acc.group(1)) <= 1.0:
                    session.error("train_mnist.py from the wheel: no test accuracy above 0.8")
            # The sdist builds and installs too (its wheel in place of the first one).
            reinstall = ("--quiet", "--force-reinstall", "--no-deps", sdist)
            session.run(python, "-m", "pip", "install", *reinstall, external=True)
            check = (
                "import importlib.metadata as m, importlib.resources as r, xprop; "
                "assert 'site-packages' in xprop.__file__, xprop.__file__; "
                "assert r.files('xprop').joinpath('py.typed').is_file(); "
                "print('xprop', xprop.__version__, 'from the sdist:', m.version('xprop'))"
            )
            session.run(python, "-c", check, external=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_dist(session: nox.Session, dist: str) -> tuple[str, str]:
    """The sdist and the wheel in ``dist``, named for ``xprop/_version.py``'s version, each
    with the files a user needs (the wheel: the package and its ``py.typed``; the sdist: the
    tests, examples and documentation too)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "xprop", "_version.py"), encoding="utf-8") as f:
        match = re.search(r'__version__ = "([^"]+)"', f.read())
    version = match.group(1) if match else "?"
    sdist = os.path.join(dist, f"xprop-{version}.tar.gz")
    wheel = os.path.join(dist, f"xprop-{version}-py3-none-any.whl")
    if sorted(os.listdir(dist)) != sorted(map(os.path.basename, (sdist, wheel))):
        session.error(f"expected {sdist} and {wheel}, got {os.listdir(dist)}")
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {name.partition("/")[2] for name in tar.getnames()}
    wants = {
        wheel: (in_wheel, ["xprop/__init__.py", "xprop/py.typed", "xprop/nn/layers.py"]),
        sdist: (
            in_sdist,
            ["CHANGELOG.md", "LICENSE", "README.md", "pyproject.toml", "noxfile.py",
             "xprop/py.typed", "tests/conftest.py", "examples/train_mnist.py",
             "benchmarks/bench_train.py", "docs/conf.py", "notebooks/ch05_backprop.md"],
        ),
    }  # fmt: skip
    for path, (names, wanted) in wants.items():
        if missing := [name for name in wanted if name not in names]:
            session.error(f"{os.path.basename(path)} lacks {', '.join(missing)}")
    if stray := sorted(n for n in in_wheel if not n.startswith(("xprop/", "xprop-"))):
        session.error(f"the wheel holds files outside the package: {', '.join(stray[:5])}")
    return sdist, wheel
