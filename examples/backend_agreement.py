"""Same network, same seed, same batch: do all backends compute the same gradients?

Builds the book's TwoLayerNet (784-50-10) in float64 on every available backend from one
seed, takes the gradient on one batch of 100 random images, and prints, per parameter,
the worst relative difference from NumPy's gradient.  Exits 1 if any exceeds 1e-12.

    python examples/backend_agreement.py [--backends numpy,torch] [--tol 1e-12]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import xprop

KEYS = ("W1", "b1", "W2", "b2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", help="comma-separated names (default: all available)")
    parser.add_argument("--tol", type=float, default=1e-12, help="relative tolerance (1e-12)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch (0)")
    args = parser.parse_args(argv)
    names = args.backends.split(",") if args.backends else xprop.available_backends()

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
            print(f"{name:<18} skipped: {exc}")
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
