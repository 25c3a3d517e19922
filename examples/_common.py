"""What the examples share: common options, MNIST, output checks and writes, the book's curve
smoothing and exit statuses.  Not an example itself.

Every example exits with one of four statuses: 0 done, 1 training diverged, 2 bad input (a
flag, the backend, the data, an output that cannot be written, all checked before training),
3 an output could not be written after all (each output is tried on its own).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import xprop
from xprop.auto import choose_backend
from xprop.datasets import DatasetError, load_mnist
from xprop.distributed import DistributedError
from xprop.files import write_atomically
from xprop.info import note_busy_cpu
from xprop.training.trainer import Evaluation

DIVERGED, BAD_INPUT, WRITE_FAILED = 1, 2, 3  # exit statuses besides 0


class UsageError(ValueError):
    """A flag the example cannot honour (an unwritable output, say): exit status 2."""


# What an example reports as one line and a status, not a traceback.
ERRORS = (FloatingPointError, UsageError, xprop.BackendError, DatasetError, DistributedError)


def parser(doc: str, plot: str | None, *, json_flag: bool = False) -> argparse.ArgumentParser:
    """A parser with ``--backend``, ``--dtype``, ``--seed``, ``--data-dir``; ``--plot`` unless
    ``plot`` is None (``plot`` is its default file; ``""``: no plot unless asked); ``--json``."""
    p = argparse.ArgumentParser(
        description=doc.partition("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    p.add_argument("--dtype", help="float dtype (default: $XPROP_DTYPE or float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batches, masks (0)")
    p.add_argument("--data-dir", help="folder with the MNIST files ($XPROP_DATA_DIR)")
    if plot:
        help_ = f"image to write (default: {plot} in the current folder); '' for none"
        p.add_argument("--plot", type=Path, default=Path(plot), help=help_)
    elif plot is not None:
        p.add_argument("--plot", type=Path, help="write the figure to this image (.png, ...)")
    if json_flag:
        p.add_argument("--json", type=Path, help="write the run's record to this JSON file")
    return p


def positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")


#: MNIST's images: a ``--train-size`` or ``--test-size`` above these is refused, not cut.
MNIST_SIZES = {"train_size": (60000, "training"), "test_size": (10000, "test")}


def within_mnist(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a ``--train-size`` above 60000 or a ``--test-size`` above 10000 (those ``args``
    has): MNIST has no more images, and a run on fewer than asked must not pass unsaid."""
    for name, (most, which) in MNIST_SIZES.items():
        value = getattr(args, name, None)
        if value is not None and value > most:
            flag = f"--{name.replace('_', '-')}"
            p.error(f"{flag} must be at most {most} (MNIST's {which} images), got {value}")


def finite_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            flag = f"--{name.replace('_', '-')}"
            p.error(f"{flag} must be a finite positive number, got {getattr(args, name)}")


def check_output(
    flag: str, path: Path | None, *, image: bool = False, formats: Sequence[str] = ()
) -> Path | None:
    """``path`` made absolute (the examples print where a figure went: the default lands in
    the current folder, where ``.gitignore`` hides it), or None for no output (None, ``''``).

    Checked before minutes of training: raises :class:`UsageError` saying why the file
    cannot be written.  An ``image`` needs matplotlib and a suffix it writes (``formats``:
    only these).
    """
    if path is None or str(path) in ("", "."):
        return None
    folder, why = Path(os.path.abspath(path)).parent, None
    if path.is_dir():
        why = "it is a folder; name a file in it"
    elif not folder.is_dir():
        why = f"folder {folder} does not exist"
    elif path.exists() and not os.access(path, os.W_OK):
        why = "the file exists and is read-only"
    else:
        try:  # the only sure test of writability: write something there
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".xprop-check-"):
                pass
        except OSError as exc:
            why = exc.strerror or str(exc)
    if why is None and image:
        try:
            import matplotlib
        except ImportError:
            raise UsageError(
                f"{flag} needs matplotlib: pip install matplotlib (or 'xprop[examples]')"
            ) from None
        matplotlib.use("Agg")  # files only: no display needed
        from matplotlib.figure import Figure

        allowed = formats or sorted(Figure().canvas.get_supported_filetypes())
        suffix = path.suffix
        if suffix[1:].lower() not in allowed:
            if not suffix:
                what = "the name has no suffix"
            elif formats:
                what = f"'{suffix}' is not written here"
            else:
                what = f"'{suffix}' is not an image format"
            why = f"{what}; end the name in .{', .'.join(allowed)}"
    if why is not None:
        raise UsageError(f"cannot write {flag} {path}: {why}")
    return Path(os.path.abspath(path))


def check_outputs(args: argparse.Namespace, dp: Any = None) -> None:
    """:func:`check_output` for each of ``--plot`` (an image) and ``--json`` that ``args``
    has, replacing the paths by their absolute forms; with ``dp`` (a
    :class:`~xprop.distributed.DataParallel`) on rank 0 only, the rank that writes."""
    if dp is not None and not dp.is_root:
        return
    if hasattr(args, "plot"):
        args.plot = check_output("--plot", args.plot, image=True)
    if hasattr(args, "json"):
        args.json = check_output("--json", args.json)


def load(args: argparse.Namespace, train_size: int | None = None) -> tuple[Any, ...]:
    """``(backend, x_train, t_train, x_test, t_test)`` with the first ``train_size`` images."""
    backend, _ = select_backend(args)
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=True, data_dir=args.data_dir, backend=backend
    )
    if train_size is not None:
        x_train, t_train = x_train[:train_size, ...], t_train[:train_size, ...]
    return backend, x_train, t_train, x_test, t_test


def select_backend(
    args: argparse.Namespace, dp: Any = None, timed: Sequence[int] = ()
) -> tuple[Any, str | None]:
    """The backend ``--backend`` and ``--dtype`` name (on this rank's device with ``dp``, a
    :class:`~xprop.distributed.DataParallel`), and None; ``auto`` times ``TwoLayerNet(*timed)``
    (sizes, batch) on every backend here: the fastest, and the timings (printed too).  Says on
    stderr when the load of the machine will stall NumPy's BLAS threads, and that float16 on
    NumPy is slow (:data:`NUMPY_FLOAT16_NOTE`)."""
    root = dp is None or dp.is_root
    if root:
        note_busy_cpu()  # several BLAS threads on shared cores stall each other
    if (args.backend or os.environ.get("XPROP_BACKEND") or "").strip() != "auto" or not timed:
        backend = (xprop if dp is None else dp).get_backend(args.backend, dtype=args.dtype)
        report = None
    elif dp is not None:  # each rank would time the backends on its own, and might differ
        raise xprop.BackendError("--backend auto: name the backend with --data-parallel")
    else:
        dtype = args.dtype or os.environ.get("XPROP_DTYPE", "float32")
        choice = choose_backend(*timed, dtype=dtype)
        backend, report = choice.backend, choice.report()
        print(report)
    if root and backend.name == "numpy" and backend.dtype_name == "float16":
        print(NUMPY_FLOAT16_NOTE, file=sys.stderr, flush=True)
    return backend, report


# Measured on the shared 2-core machine, one BLAS thread, steps of 100 images with Adam
# (TwoLayerNet 784-50-10: numpy 0.4-0.7 ms a step in float32, 35-90 ms in float16, as
# train_mnist.py's ms_per_iter; SimpleConvNet 32 ms and 1.6 s; torch's float16 steps take
# 3-8 times its float32 ones, jax's 1-2 times).
NUMPY_FLOAT16_NOTE = (
    "note: NumPy has no float16 matrix product (no BLAS for it), so float16 on numpy runs "
    "50-140 times slower than float32 (measured on one core: a TwoLayerNet step 35-90 ms "
    "against 0.4-0.7 ms, a SimpleConvNet step 1.6 s against 32 ms).\n"
    "      For float16, use --backend torch or --backend jax (their float16 steps take 1-8 "
    "times their float32 ones), or float32 on numpy."
)


def check_divergence(trainer: xprop.Trainer, ev: Evaluation, factor: float = 2.0) -> None:
    """Raise ``FloatingPointError`` if the mean loss up to evaluation ``ev`` is ``factor``
    times the first step's: training diverged, even where the loss stays finite."""
    if ev.train_loss > factor * (first := trainer.train_loss_list[0]):
        raise FloatingPointError(
            f"training diverged: the mean loss of the steps up to iteration {ev.iteration} is "
            f"{ev.train_loss:.4g}, more than {factor:g}x the first loss {first:.4g} (lr="
            f"{trainer.optimizer.lr:g}); lower --lr"
        )


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
    """Training and test accuracy per epoch (the book's figures 5-32, 6-21 and 6-23)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    epochs = range(len(train_acc))
    every = max(1, len(train_acc) // 20)
    ax.plot(epochs, train_acc, marker="o", markevery=every, label="train")
    ax.plot(epochs, test_acc, marker="s", markevery=every, linestyle="--", label="test")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epochs")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path, **savefig: Any) -> None:
    """Write ``fig`` to ``path`` all or nothing (format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, format=fmt, **{"dpi": 100, **savefig}))
    finally:
        plt.close(fig)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """The run's record as JSON, all or nothing."""
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_outputs(*outputs: tuple[str, Path | None, Callable[[Path], None]]) -> int:
    """Write each ``(flag, path, write)`` whose path is not None, each on its own (one failing
    never costs the others); 0, or 3 if any failed.  Prints where a plot went."""
    status = 0
    for flag, path, write in outputs:
        if path is None:
            continue
        try:
            write(path)
        except (OSError, ValueError) as exc:
            print(f"error: could not write {flag} {path}: {exc}", file=sys.stderr)
            status = WRITE_FAILED
        else:
            if flag == "--plot":
                print(f"plot: {path}")
    return status


def fail(error: BaseException, dp: Any = None) -> int:
    """Report one of :data:`ERRORS` as one line and return its exit status; with several MPI
    ranks (``dp``, a :class:`~xprop.distributed.DataParallel`), end them all: the others may
    be waiting for this one."""
    status = DIVERGED if isinstance(error, FloatingPointError) else BAD_INPUT
    if dp is not None and dp.size > 1:
        dp.abort(str(error), status)
    print(f"error: {error}", file=sys.stderr)
    return status


def run(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its status; the errors of :data:`ERRORS` become one line."""
    try:
        status = main()
    except ERRORS as exc:
        status = fail(exc)
    sys.exit(status)
