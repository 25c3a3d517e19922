"""The chapter-6 target: a MultiLayerNetExtend recipe against the chapter-5 book protocol.

Target (project issue 12): on MNIST, NumPy, float32, this machine, the recipe reaches test
accuracy >= 0.980 on each of seeds 0-4 within 2x the wall time of the chapter-5 book protocol
(``examples/train_mnist.py``: 784-50-10, SGD 0.1, 10000 iterations of batch 100, train and
test accuracy every epoch) measured in the same run.

The recipe: ``MultiLayerNetExtend(784, [150, 100], 10)`` with He initial weights and
BatchNorm, Adam with a learning rate falling linearly from 0.006 to 0 over 10 epochs of
batches of 200, run by :class:`xprop.Trainer` (which also measures the accuracy on 1000
training and 1000 test images every epoch); the accuracy on all 10000 test images is taken
at the end.  For each seed the two runs alternate (protocol, then recipe), so both see the
same machine load; data loading is not timed, evaluation is.  On a shared machine other
jobs only ever add time: ``--repeat N`` runs each side N times a seed and keeps the fastest
(the accuracies must repeat exactly).

    python benchmarks/ch6_recipe.py                 # seeds 0-4: about 2 minutes on 2 cores
    python benchmarks/ch6_recipe.py --quick         # smoke run: short, no verdict
    python benchmarks/ch6_recipe.py --repeat 3 --json ch6.json   # fastest of 3 runs a seed

Exit status 1 when the target is missed (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import xprop
from xprop.datasets import load_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import train_mnist  # noqa: E402  (the chapter-5 protocol, exactly as the example runs it)

HIDDEN = [150, 100]
EPOCHS = 10
BATCH = 200
LR = 0.006
TARGET_ACC = 0.980
TARGET_RATIO = 2.0


def recipe(backend: xprop.Backend, data: tuple, seed: int, epochs: int) -> dict[str, Any]:
    """Train the recipe once; its test accuracy and wall time (training plus evaluation)."""
    x_train, t_train, x_test, t_test = data
    net = xprop.MultiLayerNetExtend(
        784,
        HIDDEN,
        10,
        weight_init_std="he",
        use_batchnorm=True,
        backend=backend,
        seed=seed,
        check_labels=False,  # labels come from a verified file: no device read per step
    )
    optimizer = xprop.Adam(lr=LR)
    trainer = xprop.Trainer(
        net, x_train, t_train, x_test, t_test, epochs=epochs, mini_batch_size=BATCH,
        optimizer=optimizer, evaluate_sample_num_per_epoch=1000, verbose=False, seed=seed + 1,
    )  # fmt: skip
    start = time.perf_counter()
    for i in range(trainer.max_iter):
        optimizer.lr = LR * (1 - i / trainer.max_iter)  # linear decay towards 0
        trainer.train_step()
    test_acc = net.accuracy(x_test, t_test)
    wall = time.perf_counter() - start
    return {"test_acc": test_acc, "wall_time_s": wall, "steps": trainer.max_iter}


def protocol(seed: int, iters: int) -> dict[str, Any]:
    """The chapter-5 book protocol, run by examples/train_mnist.py's own code."""
    args = train_mnist.parse_args(["--backend", "numpy", "--dtype", "float32"])
    args.seed, args.iters = seed, iters
    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch table is not wanted here
        record = train_mnist.train(args)
    return {"test_acc": record["test_acc"], "wall_time_s": record["wall_time_s"], "steps": iters}


def best_of(repeat: int, run: Any) -> dict[str, Any]:
    """The fastest of ``repeat`` runs; every run must reach the same accuracy (same seed)."""
    results = [run() for _ in range(max(repeat, 1))]
    if len({r["test_acc"] for r in results}) != 1:
        raise RuntimeError(f"one seed gave different accuracies: {results}")
    best = min(results, key=lambda r: r["wall_time_s"])
    return {**best, "wall_times_s": [r["wall_time_s"] for r in results]}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1] for line in f if line.startswith("model name")]
        return models[0].strip()
    except (OSError, IndexError):
        return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (0-4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per seed and side; the fastest counts (a shared machine's load only adds)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0, short runs")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    epochs, iters = (1, 300) if args.quick else (EPOCHS, 10000)

    backend = xprop.get_backend("numpy", dtype="float32")
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, backend=backend)
    data = (x_train, t_train, x_test, t_test)
    threads = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    print(
        f"numpy {np.__version__}, float32, {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"thread settings: {threads or 'library defaults'}"
    )
    print(
        f"recipe: MultiLayerNetExtend(784, {HIDDEN}, 10, He, BatchNorm), Adam lr {LR} -> 0 "
        f"linearly, {epochs} epochs of batch {BATCH}"
    )
    print(f"{'seed':>4}  {'ch5 s':>7}  {'ch5 acc':>7}  {'recipe s':>8}  {'recipe acc':>10}  ratio")
    rows = []
    for seed in seeds:
        base = best_of(args.repeat, lambda: protocol(seed, iters))  # noqa: B023
        ours = best_of(args.repeat, lambda: recipe(backend, data, seed, epochs))  # noqa: B023
        ratio = ours["wall_time_s"] / base["wall_time_s"]
        rows.append({"seed": seed, "chapter5": base, "recipe": ours, "ratio": ratio})
        print(
            f"{seed:>4}  {base['wall_time_s']:>7.2f}  {base['test_acc']:>7.4f}  "
            f"{ours['wall_time_s']:>8.2f}  {ours['test_acc']:>10.4f}  {ratio:5.2f}",
            flush=True,
        )

    base_median = statistics.median(r["chapter5"]["wall_time_s"] for r in rows)
    ours_median = statistics.median(r["recipe"]["wall_time_s"] for r in rows)
    accs = [r["recipe"]["test_acc"] for r in rows]
    ratio = ours_median / base_median
    summary = {
        "chapter5_median_s": base_median,
        "recipe_median_s": ours_median,
        "median_ratio": ratio,
        "max_ratio": max(r["ratio"] for r in rows),
        "recipe_accuracies": accs,
        "min_accuracy": min(accs),
    }
    print(
        f"median wall time: chapter 5 {base_median:.2f} s, recipe {ours_median:.2f} s "
        f"(ratio {ratio:.2f}; largest per-seed ratio {summary['max_ratio']:.2f})"
    )
    print(f"recipe test accuracies: {', '.join(f'{a:.4f}' for a in accs)}")
    met = min(accs) >= TARGET_ACC and ratio <= TARGET_RATIO
    if not args.quick:
        verdict = "met" if met else "MISSED"
        print(
            f"target (every accuracy >= {TARGET_ACC}, median time <= {TARGET_RATIO}x "
            f"chapter 5): {verdict}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    return 0 if met or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
