"""Backend fixtures: every test that takes ``backend`` runs once per available backend.

With ``XPROP_BACKEND`` set (as each nox session does) only that backend is used — plus
array_api_strict's non-default device ``device1`` when it is array_api_strict, which
catches any array created without ``device=``.  Without it, every registered backend is
tried and the missing ones are skipped with the reason the backend selector gives.
"""

from __future__ import annotations

import importlib.util
import os

import backend_list
import pytest

# JAX takes 75 % of a GPU's memory at its first use, leaving too little for the
# subprocesses and MPI ranks some tests start on the same GPU (they inherit this
# environment): every process allocates what it uses.  Set before JAX is imported; a value
# set outside the tests wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import xprop
from xprop.backend import BackendError

if importlib.util.find_spec("jax") is not None:
    # The float64 fixtures need JAX's process-wide 64-bit mode; switch it on before any
    # test, as a user who wants float64 does, so xprop's one-time warning about switching
    # it is not raised (as an error) in whichever test happens to come first.
    # tests/test_backend.py checks that warning in a fresh process.
    import jax

    jax.config.update("jax_enable_x64", True)
    # JAX multiplies float32 matrices in TF32 by default on NVIDIA GPUs since Ampere (A100,
    # H100, H200): ten bits of mantissa, relative errors near 1e-3, so the float32
    # comparisons with NumPy at 1e-5 or 1e-6 would fail there and pass on the CPU.  Ask
    # for full float32 products, as NumPy, PyTorch (its default) and CuPy compute them.
    # tests/test_backend.py checks that the setting is in force.
    jax.config.update("jax_default_matmul_precision", "highest")

# Every (backend, device) of the one list that nox and the benchmarks read too.
ALL = backend_list.pairs()


def _selected() -> list[tuple[str, str | None]]:
    chosen = os.environ.get("XPROP_BACKEND", "").strip()
    if not chosen:
        return ALL
    picked = [p for p in ALL if p[0] == chosen]
    return picked or [(chosen, None)]


def _id(param: tuple[str, str | None]) -> str:
    name, device = param
    return name if device is None else f"{name}-{device}"


def make_backend(name: str, device: str | None, dtype: str) -> xprop.Backend:
    """The backend, or a pytest skip that says what is missing."""
    try:
        return xprop.get_backend(name, device=device, dtype=dtype)
    except BackendError as exc:
        pytest.skip(f"backend {_id((name, device))} unavailable: {exc}")


@pytest.fixture(params=_selected(), ids=_id)
def backend(request: pytest.FixtureRequest) -> xprop.Backend:
    """A float64 backend (gradient checks are done in float64)."""
    name, device = request.param
    return make_backend(name, device, "float64")


@pytest.fixture(params=_selected(), ids=_id)
def backend32(request: pytest.FixtureRequest) -> xprop.Backend:
    """The same backends in float32, the training dtype."""
    name, device = request.param
    return make_backend(name, device, "float32")


@pytest.fixture
def every_backend64() -> list[xprop.Backend]:
    """Every backend and device of ``ALL`` that works here, in float64, whatever the session.

    For tests that move data between backends (save on one, load on every other).
    """
    found = []
    for name, device in ALL:
        try:
            found.append(xprop.get_backend(name, device=device, dtype="float64"))
        except BackendError:
            continue
    return found


@pytest.fixture
def numpy_backend() -> xprop.Backend:
    """The reference backend (NumPy, float64) that other backends are compared with."""
    return xprop.get_backend("numpy", dtype="float64")
