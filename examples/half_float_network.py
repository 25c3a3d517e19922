"""Inference in half precision (ch. 8.3.4)
=======================================

The book's ``ch08/half_float_network.py``: a trained network's test accuracy computed in
float32 and again with its weights and the images cast to float16 — about the same, which is
why inference on 16-bit floats (half the memory and bandwidth) is common.  The book loads a
trained :class:`~xprop.DeepConvNet` and compares float64 with float16 on NumPy; here a
:class:`~xprop.SimpleConvNet` (``--deep``: DeepConvNet) is trained in float32 by the book's
protocol (Adam with learning rate 0.001, batches of 100; ``--epochs`` 20 by default,
``--train-size`` and ``--iters`` shorten it) or loaded with ``--params``, and the two
accuracies are compared on every backend installed (``--backends``) that has float16.
The array API standard has no float16, so array-api-strict is skipped, and says so.

The same weights, rounded to float16 (11 significant bits), give the same class to nearly
every test image.  NumPy computes float16 matrix products without BLAS: its float16 run is
slow (``--test-size`` limits the test images; the book's 10000 by default).

Usage::

    python examples/half_float_network.py                  # every backend with float16
    python examples/half_float_network.py --backends numpy,torch --test-size 1000
    python examples/half_float_network.py --iters 300 --train-size 5000 --test-size 500  # short
"""

from __future__ import annotations

import time

import _ch7
import _common
import numpy as np

import xprop


def accuracy(net, x_host: np.ndarray, t_host: np.ndarray) -> tuple[float, float]:
    """Test accuracy of ``net`` on the host images and labels, and the seconds it took."""
    backend = net.backend
    x = backend.asarray(x_host)  # in the backend's dtype: the images are cast too
    start = time.perf_counter()
    predicted = _ch7.predicted_labels(net, x, batch_size=500)
    return float(np.mean(predicted == t_host)), time.perf_counter() - start


def copy_params(source, target) -> None:
    """``target.params = source.params``, each cast to ``target``'s backend and dtype."""
    for key, value in source.params.items():
        target.params[key] = target.backend.asarray(source.backend.to_numpy(value))


def main() -> int:
    p = _ch7.parser(__doc__, None, epochs=20)
    p.add_argument(
        "--backends",
        help="where to compare float32 and float16 (comma-separated; default: every "
        "backend installed here)",
    )
    p.add_argument("--test-size", type=int, default=10000, help="test images, the first (10000)")
    args = p.parse_args()
    _ch7.check(p, args)
    _common.positive(p, args, "test_size")
    _common.within_mnist(p, args)
    if args.backends is None:
        names = xprop.available_backends()
    else:
        names = [n.strip() for n in args.backends.split(",") if n.strip()]
        if not names:
            p.error("--backends names no backend")

    data = _ch7.load(args)
    backend, _, _, x_test, t_test = data
    net = _ch7.network(args, backend)
    how = _ch7.train_or_load(args, net, data)
    n = args.test_size
    x_host = backend.to_numpy(x_test[:n, ...])
    t_host = backend.to_numpy(t_test[:n, ...]).astype(np.int64)

    print(f"{type(net).__name__}, {how} on {backend.describe()}; {n} test images")
    print(f"{'backend':<18} {'float32':>8} {'float16':>8} {'difference':>10} {'float16 time':>13}")
    compared = 0
    for name in names:
        try:
            be32 = xprop.get_backend(name, dtype="float32")
            be16 = xprop.get_backend(name, dtype="float16")
        except xprop.BackendError as exc:
            # array-api-strict: the standard has no float16; others: not usable here
            reason = "it has no float16" if "float16" in str(exc) else str(exc)
            print(f"{name:<18} skipped: {reason}")
            continue
        nets = []
        for be in (be32, be16):
            copy = _ch7.network(args, be)
            copy_params(net, copy)
            nets.append(copy)
        acc32, _ = accuracy(nets[0], x_host, t_host)
        acc16, seconds = accuracy(nets[1], x_host, t_host)
        print(f"{name:<18} {acc32:8.4f} {acc16:8.4f} {acc16 - acc32:+10.4f} {seconds:12.1f}s")
        compared += 1
    if compared == 0:
        print("error: no backend here has float16", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    _common.run(main)
