"""The backends xprop is tested and benchmarked on: the one list that the tests
(``tests/conftest.py``), nox (``noxfile.py``: a session per backend) and the benchmarks
(their ``--backend`` choices and defaults) read.

Pure data, importing nothing: ``noxfile.py`` reads it in nox's own environment, where
neither xprop nor any array library is installed.  Adding a backend here gives it a nox
session, a place in every backend-parametrised test and in the benchmarks' choices.
"""

from __future__ import annotations

#: Every backend, in the order the tests run them, and the pip extra of ``pyproject.toml``
#: that installs its library (None: none needed).  CuPy's extra depends on the CUDA driver
#: (``cuda12`` or ``cuda13``): ``noxfile.py`` asks ``nvidia-smi``.
BACKENDS: dict[str, str | None] = {
    "numpy": None,
    "array_api_strict": "strict",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cuda12",  # or cuda13: noxfile.py picks by the driver
}

#: Devices each backend's tests run on besides its default one.  array_api_strict's
#: ``device1`` catches every array created without ``device=`` (a CPU backend's default
#: device would hide the mistake until a GPU).
EXTRA_DEVICES: dict[str, tuple[str, ...]] = {"array_api_strict": ("device1",)}

#: The backends that run on any machine (a nox session each); cupy needs a CUDA GPU.
CPU: tuple[str, ...] = ("numpy", "array_api_strict", "torch", "jax")

#: No large library to install: the whole-program checks run on these (the notebooks, the
#: benchmarks' smoke run, the examples' runs in the tests).
LIGHT: tuple[str, ...] = ("numpy", "array_api_strict")

#: The libraries worth timing on a CPU: array_api_strict checks conformance and is not meant
#: to be fast.
TIMED: tuple[str, ...] = ("numpy", "torch", "jax")

#: The session the examples run in, once per test run (tests/test_examples.py): the
#: standard's reference implementation, so their own array code is checked to be standard.
EXAMPLES_SESSION = "array_api_strict"


def pairs() -> list[tuple[str, str | None]]:
    """``(backend, device)`` pairs of the tests: each backend on its default device (None),
    then on its extra devices."""
    return [(name, device) for name in BACKENDS for device in (None, *EXTRA_DEVICES.get(name, ()))]
