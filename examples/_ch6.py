"""What the chapter-6 examples share: common options, data, plot checks, the book's curve
smoothing and error handling.  Not an example itself."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import xprop
from xprop.datasets import DatasetError, load_mnist
from xprop.files import write_atomically
from xprop.info import note_busy_cpu


def parser(doc: str, plot: str | None) -> argparse.ArgumentParser:
    """A parser with ``--backend``, ``--dtype``, ``--seed``, ``--data-dir`` and, when a default
    file name is given, ``--plot``."""
    p = argparse.ArgumentParser(
        description=doc.partition("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    p.add_argument("--dtype", help="float dtype (default: $XPROP_DTYPE or float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batches, masks (0)")
    p.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    if plot is not None:
        p.add_argument(
            "--plot",
            type=Path,
            default=Path(plot),
            help=f"PNG to write (default: {plot} in the current folder); '' for none",
        )
    return p


def positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")


def check_plot(path: Path | None) -> Path | None:
    """The plot's absolute path (the examples print it once written: the default lands in the
    current folder, where ``.gitignore`` hides it), or None for no plot; exits (status 2)
    before training if unwritable."""
    if path is None or str(path) in ("", "."):
        return None
    path = Path(os.path.abspath(path))
    if not path.resolve().parent.is_dir():
        _fail(f"cannot write {path}: folder {path.resolve().parent} does not exist")
    try:
        import matplotlib
    except ImportError:
        _fail("plots need matplotlib: pip install matplotlib (or 'xprop[examples]'), or --plot ''")
    matplotlib.use("Agg")  # files only: no display needed
    return path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load(args: argparse.Namespace, train_size: int | None = None) -> tuple[Any, ...]:
    """``(backend, x_train, t_train, x_test, t_test)`` with the first ``train_size`` images."""
    backend = xprop.get_backend(args.backend, dtype=args.dtype)
    note_busy_cpu()  # on stderr: several BLAS threads on shared cores stall
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, data_dir=args.data_dir, backend=backend
    )
    if train_size is not None:
        x_train, t_train = x_train[:train_size, ...], t_train[:train_size, ...]
    return backend, x_train, t_train, x_test, t_test


def smooth_curve(values: list[float], window: int = 11, beta: float = 2.0) -> np.ndarray:
    """The book's loss smoothing (``common/util.py``): a Kaiser-weighted moving average over
    ``window`` points, the ends mirrored so the curve keeps its length."""
    x = np.asarray(values, dtype=float)
    half = window // 2
    if x.size <= half:
        return x
    padded = np.concatenate([x[half:0:-1], x, x[-2 : -half - 2 : -1]])
    weights = np.kaiser(window, beta)
    return np.convolve(padded, weights / weights.sum(), mode="valid")


def plot_accuracy(train_acc: list[float], test_acc: list[float], title: str, path: Path) -> None:
    """Training and test accuracy per epoch, the book's overfitting figures."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    epochs = range(len(train_acc))
    every = max(1, len(train_acc) // 20)
    ax.plot(epochs, train_acc, marker="o", markevery=every, label="train")
    ax.plot(epochs, test_acc, marker="s", markevery=every, label="test")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` all or nothing (format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format=fmt))
    finally:
        plt.close(fig)


def run(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its status; known errors become one line and status 2."""
    try:
        status = main()
    except (xprop.BackendError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)
