"""Test matrix: the whole suite once per array backend, plus lint, docs and examples.

``nox`` runs every session that can run here; ``nox -l`` lists them; ``nox -s torch`` runs
one.  Each backend session installs xprop with the ``test`` extra and that backend's extra
and selects the backend with ``XPROP_BACKEND``, so every gradient test runs on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = False

# backend name -> pip extra that installs its library
BACKENDS = {
    "numpy": None,
    "array_api_strict": "strict",
    "torch": "torch",
    "jax": "jax",
}


def _install(session: nox.Session, *extras: str) -> None:
    spec = ".[" + ",".join(("test", *(e for e in extras if e))) + "]"
    session.install(spec)


def _pytest(session: nox.Session, backend: str) -> None:
    session.run(
        "pytest",
        *session.posargs,
        env={"XPROP_BACKEND": backend},
    )


def _make_backend_session(backend: str, extra: str | None) -> None:
    @nox.session(name=backend)
    def tests(session: nox.Session) -> None:
        _install(session, extra or "")
        _pytest(session, backend)

    tests.__doc__ = f"Whole test suite with XPROP_BACKEND={backend}."


for _name, _extra in BACKENDS.items():
    _make_backend_session(_name, _extra)


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
    _pytest(session, "cupy")


@nox.session
def agreement(session: nox.Session) -> None:
    """TwoLayerNet float64 gradients on every installed backend against NumPy's (<= 1e-12)."""
    _install(session, "strict", "torch", "jax")
    session.run("python", "examples/backend_agreement.py")


@nox.session
def mpi(session: nox.Session) -> None:
    """Data parallelism on MPI: the collectives under mpiexec -n 2, then 1 vs 2 ranks."""
    _install(session, "mpi", "strict", "torch", "jax")
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
    """Build the Sphinx site with warnings as errors (docs/_build/html), offline.

    The build runs the example gallery and the chapter-5 and chapter-7 notebooks; with
    XPROP_DATA_DIR unset, the MNIST parts are shown unexecuted.  The agreement table of the
    gallery lists every CPU backend, hence strict, torch and jax.
    """
    session.install(".[docs,strict,torch,jax]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def notebook(session: nox.Session) -> None:
    """notebooks/ch05_backprop.md and ch07_cnn.md executed top to bottom on numpy and
    array_api_strict (short training runs)."""
    _install(session, "notebook", "strict")
    for backend in ("numpy", "array_api_strict"):
        session.run(
            "pytest", "tests/test_notebook.py", *session.posargs, env={"XPROP_BACKEND": backend}
        )


@nox.session
def examples(session: nox.Session) -> None:
    """Every example on numpy and array_api_strict with short settings."""
    session.install(".[examples,strict]")
    for backend in ("numpy", "array_api_strict"):
        env = {"XPROP_BACKEND": backend}
        session.run("python", "examples/buy_apple.py", env=env)
        session.run("python", "examples/buy_apple_orange.py", env=env)
        session.run("python", "examples/two_by_two_sigmoid.py", env=env)
        session.run("python", "examples/backend_agreement.py", "--backends", backend, env=env)
        if os.environ.get("XPROP_DATA_DIR"):
            session.run("python", "examples/gradient_check.py", "--hidden", "3", env=env)
            session.run("python", "examples/train_mnist.py", "--iters", "600", env=env)
            session.run(
                "python", "examples/train_mnist.py", "--iters", "300", "--book-loop", env=env
            )
            # Chapter 6, short settings; the plots go to the session's temporary folder.
            plots = session.create_tmp()
            for script, *args in (
                ("optimizer_compare_mnist.py", "--iters", "100"),
                ("batch_norm_test.py", "--epochs", "2", "--scales", "2"),
                ("overfit_weight_decay.py", "--epochs", "5"),
                ("overfit_dropout.py", "--epochs", "5"),
            ):
                plot = os.path.join(plots, f"{backend}-{script[:-3]}.png")
                session.run("python", f"examples/{script}", *args, "--plot", plot, env=env)
            session.run(
                "python", "examples/train_save_reload.py", "--epochs", "1", "--train-size",
                "5000", "--to", "numpy" if backend != "numpy" else "array_api_strict", env=env,
            )  # fmt: skip
            # Chapters 7-8, short settings: 300 Adam steps on 5000 images (~10 s each here).
            short_cnn = ("--iters", "300", "--train-size", "5000")
            for script in ("visualize_filter.py", "misclassified_mnist.py"):
                plot = os.path.join(plots, f"{backend}-{script[:-3]}.png")
                session.run("python", f"examples/{script}", *short_cnn, "--plot", plot, env=env)
            session.run(
                "python", "examples/half_float_network.py", *short_cnn, "--test-size", "500",
                env=env,
            )  # fmt: skip
            # Chapters 7-8, short settings (the defaults are the book's 20-epoch protocols).
            short = ("--epochs", "2", "--train-size", "500", "--test-size", "500")
            session.run("python", "examples/train_convnet.py", *short, env=env)
            session.run("python", "examples/train_deepnet.py", *short, env=env)
        else:
            session.log("XPROP_DATA_DIR is not set: skipping the MNIST examples here")
    if os.environ.get("XPROP_DATA_DIR"):  # auto times every backend installed here
        session.run("python", "examples/train_mnist.py", "--backend", "auto", "--iters", "300")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark smoke run: every row's one-step check must pass (timings are not judged)."""
    _install(session, "strict")
    session.run(
        "python",
        "benchmarks/bench_train.py",
        "--quick",
        "--backend",
        "numpy,array_api_strict",
        "--modes",
        "step,loop,eval",
    )
    session.run("python", "benchmarks/bench_conv.py", "--quick", "--rows", "book,xprop-numpy")
