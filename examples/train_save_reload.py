"""Save a checkpoint, reload it on another backend
===============================================

Train with Adam and BatchNorm, save a checkpoint, reload it on another backend.  A
``MultiLayerNetExtend`` (784-100-100-10, BatchNorm, He initial weights) is trained on MNIST
by the :class:`~xprop.Trainer` with Adam on one backend (``--backend``), saved with
``net.save_params`` (a safetensors file: parameters, BatchNorm's running statistics and the
optimizer's state), then loaded into a network built on another backend (``--to``) and
compared: the parameters must arrive bit for bit and both networks must give the same test
accuracy and (up to the libraries' rounding) the same scores.

Usage::

    python examples/train_save_reload.py                                # numpy -> array_api_strict
    python examples/train_save_reload.py --backend torch --to jax --path net.safetensors  # kept
    python examples/train_save_reload.py --epochs 1 --train-size 2000   # short
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import _common
import numpy as np

import xprop
from xprop.checkpoint import read_metadata


def main() -> int:
    p = _common.parser(__doc__, None)
    p.add_argument("--to", default="array_api_strict", help="backend to reload on")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (5)")
    p.add_argument("--train-size", type=int, default=60000, help="training images (60000)")
    p.add_argument(
        "--path", type=Path, help="checkpoint file, kept (default: a temporary one, removed)"
    )
    args = p.parse_args()
    _common.positive(p, args, "epochs", "train_size")
    _common.within_mnist(p, args)
    args.path = _common.check_output("--path", args.path)  # before minutes of training
    backend, x_train, t_train, x_test, t_test = _common.load(args, args.train_size)
    target = xprop.get_backend(args.to, dtype=backend.dtype_name)

    def build(be: xprop.Backend, seed: int) -> xprop.MultiLayerNetExtend:
        return xprop.MultiLayerNetExtend(
            784, [100, 100], 10, weight_init_std="he", use_batchnorm=True, backend=be, seed=seed
        )

    net = build(backend, args.seed)
    trainer = xprop.Trainer(
        net, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=100,
        optimizer="adam", optimizer_param={"lr": 0.001}, evaluate_sample_num_per_epoch=1000,
        seed=args.seed + 1,
    )  # fmt: skip
    trainer.train()

    with tempfile.TemporaryDirectory(prefix="xprop-") as tmp:
        path = Path(os.path.abspath(args.path or Path(tmp) / "net.safetensors"))
        net.save_params(path, optimizer=trainer.optimizer)
        meta = read_metadata(path)
        print(
            f"saved {path}: {meta['class']} {meta['config']['hidden_size_list']} "
            f"{meta['dtype']} from {meta['backend']} ({path.stat().st_size} bytes)"
        )
        if args.path is None:
            print("  (a temporary file, removed once reloaded; --path FILE keeps it)")
        reloaded = build(target, args.seed + 100)  # other initial weights: all overwritten
        optimizer = xprop.Adam()
        reloaded.load_params(path, optimizer=optimizer)
    print(f"loaded on {target.describe()}; Adam resumes at update {optimizer.iter}")

    saved = {**net.params, **net.running_stats()}
    loaded = {**reloaded.params, **reloaded.running_stats()}
    identical = all(
        np.array_equal(backend.to_numpy(saved[k]), target.to_numpy(loaded[k])) for k in saved
    )
    x_host, t_host = backend.to_numpy(x_test).copy(), backend.to_numpy(t_test).copy()
    acc = net.accuracy(x_test, t_test)
    acc_reloaded = reloaded.accuracy(target.asarray(x_host), target.asarray(t_host))
    scores = backend.to_numpy(net.predict(x_test[:1000, ...]))
    scores_reloaded = target.to_numpy(reloaded.predict(target.asarray(x_host[:1000])))
    diff = float(np.max(np.abs(scores - scores_reloaded)))
    print(f"parameters identical: {identical}")
    print(f"test accuracy: {acc:.4f} on {backend.name}, {acc_reloaded:.4f} on {target.name}")
    print(f"largest score difference on 1000 test images: {diff:.3g}")
    tolerance = 1e-3 if backend.dtype_name == "float32" else 1e-9
    # Scores agree to rounding; an image scored on a knife's edge may flip between libraries.
    if not (identical and abs(acc - acc_reloaded) <= 2 / t_host.shape[0] and diff < tolerance):
        print("error: the reloaded network differs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    _common.run(main)
