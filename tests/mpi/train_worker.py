"""A data-parallel training run for the tests: ``mpiexec -n N python train_worker.py OUT.npz``.

Trains the two-layer network for ``--steps`` SGD steps of a global minibatch of ``--batch``
samples on every backend and dtype named, on synthetic data (seeded, so every rank and every
run holds the same numbers), the way :mod:`xprop.distributed` says: the same global indices
on every rank, this rank's slice, gradient, average over the ranks, the book's update.
Rank 0 writes every final parameter and every step's loss (the mean over the ranks) to
``OUT.npz`` as ``<backend>-<dtype>-<key>``; a run on 1 rank and a run on 2 must agree.

``--disagree keys|shapes|dtypes`` makes the last rank build a different network, and
``--raise-on-rank R`` makes rank ``R`` raise before its first step: both must end every
rank with an error on stderr, not hang.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import xprop
from xprop.distributed import DataParallel

N_SAMPLES = 2048


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--backends", default="numpy")
    parser.add_argument("--dtypes", default="float64")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--disagree", choices=("keys", "shapes", "dtypes"))
    parser.add_argument("--raise-on-rank", type=int)
    args = parser.parse_args()

    if "jax" in args.backends.split(","):
        import jax

        # As tests/conftest.py does for the suite: full float32 matrix products, not JAX's
        # TF32 default on NVIDIA GPUs, whose rounding would break the 1e-5 agreement of a
        # float32 run on 1 rank and on 2 (tests/test_distributed.py).
        jax.config.update("jax_default_matmul_precision", "highest")
    dp = DataParallel()
    odd = dp.rank == dp.size - 1 and dp.size > 1  # the rank that disagrees, if told to
    data = np.random.default_rng(123)
    x_host = data.random((N_SAMPLES, 784))
    t_host = data.integers(0, 10, N_SAMPLES)
    results: dict[str, np.ndarray] = {}
    for name in args.backends.split(","):
        for dtype in args.dtypes.split(","):
            if args.disagree == "dtypes" and odd:
                dtype = "float32" if dtype == "float64" else "float64"
            backend = dp.get_backend(name, dtype=dtype)
            xp = backend.xp
            x_train, t_train = backend.asarray(x_host), backend.asarray(t_host)
            hidden = args.hidden + (1 if args.disagree == "shapes" and odd else 0)
            net = xprop.TwoLayerNet(784, hidden, 10, backend=backend, seed=0)
            if args.disagree == "keys" and odd:
                net.params["extra"] = backend.zeros(3)
            if args.raise_on_rank == dp.rank:
                raise RuntimeError(f"rank {dp.rank} was told to fail")
            dp.broadcast_params(net.params)
            rng = backend.rng(1)
            losses = []
            for _ in range(args.steps):
                idx = dp.shard(rng.choice(N_SAMPLES, args.batch))
                x_batch = xp.take(x_train, idx, axis=0)
                t_batch = xp.take(t_train, idx, axis=0)
                grads = dp.average_gradients(net.gradient(x_batch, t_batch))
                for key in net.params:
                    net.params[key] -= args.lr * grads[key]
                losses.append(float(net.last_layer.loss))
            prefix = f"{name}-{dtype}"
            results[f"{prefix}-loss"] = dp.average(losses)
            for key, value in net.params.items():
                results[f"{prefix}-{key}"] = backend.to_numpy(value)
            dp = DataParallel()  # a fresh agreement for the next network
    if dp.is_root:
        np.savez(args.out, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
