"""Do all backends compute the same gradients?
===========================================

Same network, same seed, same batch.  Builds the book's TwoLayerNet (784-50-10) in float64
on every available backend from one seed, takes the gradient on one batch of 100 random
images, and prints, per parameter, the worst relative difference from NumPy's gradient.
Exits 1 if any exceeds 1e-12, or if a backend named with ``--backends`` cannot run here; 2
for a bad flag (an unknown backend name, a tolerance that is not a finite positive number).

Usage::

    python examples/backend_agreement.py [--backends numpy,torch] [--tol 1e-12]
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import xprop
from xprop.libraries import known_backends
from xprop.nets.two_layer_net import PARAM_KEYS as KEYS


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (``nan`` or ``0`` would make every check pass)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """An argparse type: an integer >= 0 (what numpy.random.default_rng accepts)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--backends", help="comma-separated names (default: all available)")
    parser.add_argument(
        "--tol", type=positive_float, default=1e-12, help="relative tolerance (1e-12)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="seed of weights and batch (0)")
    args = parser.parse_args(argv)
    if args.backends is None:
        names, named = xprop.available_backends(), False
    else:
        names, named = [n.strip() for n in args.backends.split(",") if n.strip()], True
        unknown = [n for n in names if n not in known_backends()]
        if unknown or not names:
            parser.error(
                f"--backends: unknown backend(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from: {', '.join(known_backends())}"
            )

    rng = np.random.default_rng(args.seed + 1)
    x_host, t_host = rng.random((100, 784)), rng.integers(0, 10, 100)
    ref_backend = xprop.get_backend("numpy", dtype="float64")
    ref = xprop.TwoLayerNet(784, 50, 10, backend=ref_backend, seed=args.seed)
    want = ref.gradient(ref_backend.asarray(x_host), ref_backend.asarray(t_host))

    print(f"{'backend':<18} {'device':<38} " + " ".join(f"{k:>9}" for k in KEYS))
    failed = False
    for name in names:
        try:
            be = xprop.get_backend(name, dtype="float64")
        except xprop.BackendError as exc:
            # Asked for by name, it must run: a skip would let the check pass unchecked.
            failed |= named
            print(f"{name:<18} {'unavailable' if named else 'skipped'}: {exc}")
            continue
        net = xprop.TwoLayerNet(784, 50, 10, backend=be, seed=args.seed)
        got = net.gradient(be.asarray(x_host), be.asarray(t_host))
        worst = []
        for key in KEYS:
            g = be.to_numpy(got[key])
            worst.append(float(np.max(np.abs(g - want[key])) / np.max(np.abs(want[key]))))
        failed |= any(w > args.tol for w in worst)
        print(f"{name:<18} {be.device!s:<38} " + " ".join(f"{w:9.1e}" for w in worst))
    verdict = "FAIL" if failed else "ok"
    print(f"{verdict}: worst relative difference from numpy per parameter, tolerance {args.tol:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
