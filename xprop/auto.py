"""``XPROP_BACKEND=auto``: time the actual network on every backend and device, take the fastest.

A GPU is not always the fast choice: the book's 784-50-10 network does a few microseconds
of arithmetic per step, and on a GPU each of its dozens of kernel launches costs more than
that, so a laptop's CPU can beat a data-centre GPU.  A bigger network turns the answer
around.  :func:`choose_backend` settles it by measurement: it builds the network on every
available backend and device, runs a few compiled training steps on random data of the
right shape, and returns the fastest together with what it measured.

Importing this module registers the backend name ``"auto"`` with
:func:`xprop.backend.register_selector` (``import xprop`` does), so that
``get_backend("auto")`` and ``XPROP_BACKEND=auto`` land in :func:`auto_backend` without
backend selection importing a network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from xprop.backend import Backend, available_backends, get_backend, register_selector
from xprop.checks import check_count
from xprop.libraries import BackendError, library
from xprop.nets.two_layer_net import TwoLayerNet

__all__ = ["AUTO", "BackendChoice", "auto_backend", "choose_backend", "last_choice"]

#: The backend name that stands for the fastest backend here.
AUTO = "auto"

# The reference implementation proves code standard-clean; it is not meant to be fast.
_NOT_FOR_SPEED = ("array_api_strict",)


@dataclass
class BackendChoice:
    """The outcome of :func:`choose_backend`.

    Attributes
    ----------
    backend : Backend
        The fastest backend (on its device, in the dtype asked for).
    seconds_per_step : dict
        ``describe()`` of every backend timed -> seconds per compiled step (best of the
        repeats).
    skipped : dict
        ``describe()`` or name of every candidate left out -> why.
    shape : str
        The network and batch that were timed, e.g. ``"784-50-10, batch 100"``.
    """

    backend: Backend
    seconds_per_step: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    shape: str = ""

    def report(self) -> str:
        """Several lines: what was timed, each candidate's time, the choice."""
        lines = [f"auto: timed a training step of {self.shape} on each backend:"]
        best = self.seconds_per_step[self.backend.describe()]
        for label, seconds in sorted(self.seconds_per_step.items(), key=lambda kv: kv[1]):
            mark = "  <- chosen" if label == self.backend.describe() else ""
            lines.append(
                f"  {label:<40} {seconds * 1e3:8.3f} ms/step  ({seconds / best:5.2f}x){mark}"
            )
        lines += [f"  {label:<40} skipped: {why}" for label, why in self.skipped.items()]
        return "\n".join(lines)


def choose_backend(
    input_size: int = 784,
    hidden_size: int = 50,
    output_size: int = 10,
    batch_size: int = 100,
    *,
    dtype: str = "float32",
    names: list[str] | None = None,
    steps: int = 20,
    repeats: int = 3,
) -> BackendChoice:
    """Time ``TwoLayerNet(input_size, hidden_size, output_size)`` on every backend; pick one.

    Each candidate is a backend name and one device of each kind it has (e.g. torch on
    ``cuda:0`` and on ``cpu``).  For each, the network's compiled step
    (:meth:`~xprop.nets.network.Network.compile_step`) runs once to compile and warm up, then
    ``repeats`` times ``steps`` steps on random data, waiting for the device at the end of
    each; the best of the repeats counts (other work on the machine only ever adds time).

    Parameters
    ----------
    input_size, hidden_size, output_size, batch_size : int
        The network and minibatch to time (the book's by default).
    dtype : str
        The floating dtype.
    names : list of str, optional
        Backends to consider; default every available one except ``array_api_strict``
        (a reference implementation, not meant to be fast).
    steps, repeats : int
        Steps per timing and timings per candidate.

    Raises
    ------
    BackendError
        When no candidate could be timed (the message says why for each).
    TypeError, ValueError
        When a size, ``steps`` or ``repeats`` is not an integer of at least 1 (checked
        before any timing).
    """
    for value, what in (
        (input_size, "input_size"),
        (hidden_size, "hidden_size"),
        (output_size, "output_size"),
        (batch_size, "batch_size"),
        (steps, "steps"),
        (repeats, "repeats"),
    ):
        check_count(value, f"choose_backend {what}")
    if names is None:
        names = [n for n in available_backends() if n not in _NOT_FOR_SPEED]
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    backends: dict[str, Backend] = {}
    for name in names:
        for device in _candidate_devices(name, skipped):
            try:
                be = get_backend(name, device=device, dtype=dtype)
                label = be.describe()
                net = TwoLayerNet(
                    input_size,
                    hidden_size,
                    output_size,
                    "he",
                    backend=be,
                    seed=0,
                    check_labels=False,
                )
                step = net.compile_step(0.01)
                rng = be.rng(0)  # the same random data on every backend
                x = rng.normal((batch_size, input_size))
                t = rng.choice(output_size, batch_size)
                be.synchronize(step(x, t))  # compile, allocate
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    for _ in range(steps):
                        loss = step(x, t)
                    be.synchronize(loss, *net.params.values())
                    samples.append((time.perf_counter() - start) / steps)
            except Exception as exc:  # one broken candidate must not stop the others
                skipped[f"{name} ({device})"] = f"{type(exc).__name__}: {exc}"
                continue
            # The best of the repeats: other work on the machine only ever adds time.
            timings[label] = min(samples)
            backends[label] = be
    if not timings:
        details = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no backend available"
        raise BackendError(f"auto could not time any backend ({details})")
    fastest = min(timings, key=lambda label: timings[label])
    return BackendChoice(
        backend=backends[fastest],
        seconds_per_step=timings,
        skipped=skipped,
        shape=f"{input_size}-{hidden_size}-{output_size}, batch {batch_size}, {dtype}",
    )


def _candidate_devices(name: str, skipped: dict[str, str]) -> list[Any]:
    """The first device of each kind (platform) the library has."""
    try:
        lib = library(name)
        devices = lib.devices(lib.namespace())
    except Exception as exc:
        skipped[name] = f"{type(exc).__name__}: {exc}"
        return []
    seen, out = set(), []
    for d in devices:
        kind = getattr(d, "type", None) or getattr(d, "platform", None) or str(d)
        if kind not in seen:
            seen.add(kind)
            out.append(d)
    return out


_AUTO_CACHE: dict[str, BackendChoice] = {}


def auto_backend(dtype: str = "float32") -> Backend:
    """The backend ``"auto"`` stands for: the fastest for the book's network, once per process.

    ``get_backend("auto")`` lands here.  The measurement (about a second) runs at the first
    call for each dtype and is reused; :func:`last_choice` gives its report.
    """
    if dtype not in _AUTO_CACHE:
        _AUTO_CACHE[dtype] = choose_backend(dtype=dtype)
    return _AUTO_CACHE[dtype].backend


def last_choice(dtype: str = "float32") -> BackendChoice | None:
    """What ``get_backend("auto")`` measured in this process for ``dtype``, if it ran."""
    return _AUTO_CACHE.get(dtype)


register_selector(AUTO, auto_backend)
