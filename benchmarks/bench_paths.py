"""One training path, measured: compiled vs eager steps, this code vs an earlier checkout.

Every number is a ratio of two timings taken in the same run, on one BLAS thread and one
XLA thread, in CPU time (``time.process_time``: other work on a shared machine adds wall
time, not CPU time), the best of several repeats.

- ``ab``: the book's network (784-50-10, batch 100, float32, NumPy): the eager SGD step
  and the book's loop body (``gradient`` + update), with this checkout and with an earlier
  one (``--before PATH``, e.g. ``git worktree add ../xprop-before <commit>``), alternating
  between the two in fresh processes; and hand-optimised NumPy (``reference_nets``).
- ``caches``: the same step with each cache of this checkout taken out in turn (the ones
  vectors of the bias sums, the namespace-by-type table).
- ``recipe``: the chapter-6 recipe's step (``MultiLayerNetExtend(784, [150, 100], 10)``,
  BatchNorm, Adam, batch 100): the book's loop body vs the compiled step, per backend.
- ``trainer``: ``Trainer`` on the recipe with real MNIST (``XPROP_DATA_DIR``), compiled vs
  the book's loop (``compiled=False``), per backend: wall time of ``train()``.

``python benchmarks/bench_paths.py --before ../xprop-before`` runs them all; ``--parts``
picks some.  Timings are printed, never judged (docs/performance.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from backend_list import TIMED  # the tests' and nox's list of backends

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def best_cpu_time(fn, number: int, repeat: int, sync=lambda: None) -> float:
    """Seconds of CPU time per call of ``fn``: the best of ``repeat`` runs of ``number``."""
    for _ in range(max(number // 4, 2)):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        sync()
        best = min(best, (time.process_time() - start) / number)
    return best


# -- one process: the book step of one checkout ------------------------------------------------

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import numpy as np
import xprop
from bench_paths import best_cpu_time
number, repeat = int(sys.argv[3]), int(sys.argv[4])
be = xprop.get_backend("numpy", dtype="float32")
rng = np.random.default_rng(0)
x = be.asarray(rng.random((100, 784)).astype(np.float32))
t = be.asarray(rng.integers(0, 10, 100))
net = xprop.TwoLayerNet(784, 50, 10, backend=be, seed=0, check_labels=False)
step = net.compile_step(0.1)  # the eager step on NumPy, before and after
def book():
    grads = net.gradient(x, t)
    for key in grads:
        net.params[key] -= 0.1 * grads[key]
out = {"step": best_cpu_time(lambda: step(x, t), number, repeat),
       "book": best_cpu_time(book, number, repeat)}
print(json.dumps(out))
"""


def ab(before: str | None, rounds: int, number: int, repeat: int) -> dict:
    trees = {"now": str(ROOT)} | ({"before": before} if before else {})
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    for _ in range(rounds):  # alternate, so a busy spell hits both
        for name, tree in trees.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, tree, str(ROOT / "benchmarks"),
                 str(number), str(repeat)],
                env={**os.environ, **ONE_THREAD, "PYTHONPATH": tree},
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for key, value in json.loads(out.strip().splitlines()[-1]).items():
                samples[name].setdefault(key, []).append(value)
    result = {name: {k: min(v) for k, v in d.items()} for name, d in samples.items()}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    result["hand"] = {"step": _hand(number, repeat)}
    return result


def _hand(number: int, repeat: int) -> float:
    import numpy as np
    from reference_nets import Config, HandOptimised, HostData, initial_params

    cfg = Config("book", 784, 50, 10, 100)
    rng = np.random.default_rng(0)
    data = HostData(
        source="random",
        x_train=rng.random((1000, 784)).astype(np.float32),
        t_train=rng.integers(0, 10, 1000),
        x_test=rng.random((100, 784)).astype(np.float32),
        t_test=rng.integers(0, 10, 100),
        x_batch=rng.random((100, 784)).astype(np.float32),
        t_batch=rng.integers(0, 10, 100),
    )
    hand = HandOptimised("float32")
    hand.prepare(cfg, data, initial_params(cfg, 0), 0)
    return best_cpu_time(hand.step, number, repeat)


# -- caches ----------------------------------------------------------------------------------


def caches(number: int, repeat: int) -> dict:
    """The eager step with each cache of xprop taken out in turn (monkeypatched)."""
    import numpy as np

    import xprop
    from xprop import _namespace, _sums

    be = xprop.get_backend("numpy", dtype="float32")
    rng = np.random.default_rng(0)
    x = be.asarray(rng.random((100, 784)).astype(np.float32))
    t = be.asarray(rng.integers(0, 10, 100))

    def timed() -> float:
        net = xprop.TwoLayerNet(784, 50, 10, backend=be, seed=0, check_labels=False)
        step = net.compile_step(0.1)
        return best_cpu_time(lambda: step(x, t), number, repeat)

    out = {"all caches": timed()}
    saved = (_sums.column_sums, _sums.row_sums)
    import xprop.nn.layers as layers

    layers.column_sums = lambda xp, a: xp.sum(a, axis=0)
    layers.row_sums = lambda xp, a: xp.sum(a, axis=-1, keepdims=True)
    out["sums as xp.sum"] = timed()
    layers.column_sums, layers.row_sums = saved
    # Without the table: keep it full of other types, so nothing is found or added.
    table = _namespace._BY_TYPE
    by_type = dict(table)
    table.clear()
    for i in range(64):
        table[type(f"T{i}", (), {})] = None
    out["no namespace table"] = timed()
    table.clear()
    table.update(by_type)
    return out


# -- the recipe step and Trainer --------------------------------------------------------------


def _recipe(be, seed: int = 0):
    import xprop

    return xprop.MultiLayerNetExtend(
        784, [150, 100], 10, use_batchnorm=True, backend=be, seed=seed, check_labels=False
    )


def _sync(be, net):
    return lambda: be.synchronize(*net.params.values())


def recipe(backends: list[str], number: int, repeat: int) -> dict:
    import numpy as np

    import xprop
    from xprop.optimizers import Adam

    out = {}
    for name in backends:
        be = xprop.get_backend(name, dtype="float32")
        rng = np.random.default_rng(0)
        x = be.asarray(rng.random((100, 784)).astype(np.float32))
        t = be.asarray(rng.integers(0, 10, 100))
        book_net, book_opt = _recipe(be), Adam(0.001)

        def book(net=book_net, opt=book_opt, x=x, t=t):
            opt.update(net.params, net.gradient(x, t))

        net = _recipe(be)
        step = net.compile_step(Adam(0.001))
        out[name] = {
            "kind": step.kind,
            "book": best_cpu_time(book, number, repeat, sync=_sync(be, book_net)),
            "compiled": best_cpu_time(
                lambda step=step, x=x, t=t: step(x, t), number, repeat, sync=_sync(be, net)
            ),
        }
    return out


def trainer(backends: list[str], epochs: int, train_size: int) -> dict:
    import xprop
    from xprop.datasets import load_mnist

    out = {}
    for name in backends:
        be = xprop.get_backend(name, dtype="float32")
        (x, t), (xt, tt) = load_mnist(backend=be)
        x, t = x[:train_size, ...], t[:train_size]
        row = {}
        for compiled in (False, True):
            net = _recipe(be, seed=0)
            tr = xprop.Trainer(
                net, x, t, xt, tt, epochs=epochs, mini_batch_size=100, optimizer="adam",
                optimizer_param={"lr": 0.001}, evaluate_sample_num_per_epoch=1000,
                verbose=False, seed=1, compiled=compiled,
            )  # fmt: skip
            start = time.perf_counter()
            acc = tr.train()
            row["compiled" if compiled else "book"] = time.perf_counter() - start
            row[f"acc {'compiled' if compiled else 'book'}"] = acc
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--before", help="a checkout of the earlier code, for the A/B")
    parser.add_argument("--parts", default="ab,caches,recipe,trainer")
    parser.add_argument("--backends", default=",".join(TIMED), help=f"({','.join(TIMED)})")
    parser.add_argument("--rounds", type=int, default=5, help="A/B alternations")
    parser.add_argument("--number", type=int, default=300, help="steps per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings per number")
    parser.add_argument("--epochs", type=int, default=2, help="Trainer epochs")
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    for key, value in ONE_THREAD.items():
        os.environ.setdefault(key, value)
    parts = args.parts.split(",")
    backends = [b for b in args.backends.split(",") if b]
    results: dict = {}
    if "ab" in parts:
        results["ab"] = ab(args.before, args.rounds, args.number, args.repeat)
        r = results["ab"]
        for key in ("step", "book"):
            line = f"ab {key:5s} now {r['now'][key] * 1e3:.3f} ms"
            if "before" in r:
                line += f", before {r['before'][key] * 1e3:.3f} ms, now/before "
                line += f"{r['now'][key] / r['before'][key]:.3f}"
            if key == "step":
                line += f", hand {r['hand']['step'] * 1e3:.3f} ms, now/hand "
                line += f"{r['now']['step'] / r['hand']['step']:.3f}"
            print(line, flush=True)
    if "caches" in parts:
        results["caches"] = caches(args.number, args.repeat)
        base = results["caches"]["all caches"]
        for key, value in results["caches"].items():
            print(f"caches {key:20s} {value * 1e3:.3f} ms ({value / base:.3f}x)", flush=True)
    if "recipe" in parts:
        results["recipe"] = recipe(backends, max(args.number // 3, 20), args.repeat)
        for name, r in results["recipe"].items():
            print(
                f"recipe {name:6s} book loop {r['book'] * 1e3:.3f} ms, {r['kind']} "
                f"{r['compiled'] * 1e3:.3f} ms: {r['book'] / r['compiled']:.2f}x faster",
                flush=True,
            )
    if "trainer" in parts:
        results["trainer"] = trainer(backends, args.epochs, args.train_size)
        for name, r in results["trainer"].items():
            print(
                f"trainer {name:6s} book loop {r['book']:.2f} s (acc {r['acc book']:.4f}), "
                f"compiled {r['compiled']:.2f} s (acc {r['acc compiled']:.4f}): "
                f"{r['book'] / r['compiled']:.2f}x faster",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
