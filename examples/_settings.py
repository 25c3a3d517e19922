"""How each example runs: the one table that ``tests/test_examples.py`` (the short runs, with
their assertions) and the documentation's example gallery (``docs/_ext/xprop_gallery.py``)
read.  Not an example itself, and pure data: the docs build and the tests read it without
importing xprop.

The tests run every example once per test run, short; the gallery runs each one again for
the documentation's pages: with the book's settings up to chapter 6 (80-100 s in all on a
shared two-core machine), short for the convolutional networks of chapters 7-8 (20-30 s in
all; the book's 20 epochs take minutes per example).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """How one example runs short, how the docs run it, where the guide discusses it."""

    see_also: str  # reST: the guide's page(s) about it
    short: tuple[str, ...] = ()  # a run of seconds (besides outputs such as --plot)
    docs_short: bool = False  # the gallery runs it short too, not with the book's settings
    plot: bool = False  # the script takes --plot FILE.png
    mnist: bool = False  # it reads MNIST (runs only when XPROP_DATA_DIR is set)

    @property
    def docs_args(self) -> tuple[str, ...]:
        """The arguments the gallery runs it with (besides ``--plot``)."""
        return self.short if self.docs_short else ()


_CNN = ("--iters", "100", "--train-size", "2000")  # 100 Adam steps: ~90 % test accuracy
_TECHNIQUES = ":doc:`/training-techniques`"

#: Each example, in the book's order.
SETTINGS: dict[str, Setting] = {
    "buy_apple.py": Setting(":doc:`/computational-graph`", plot=True),
    "buy_apple_orange.py": Setting(":doc:`/computational-graph`", plot=True),
    "two_by_two_sigmoid.py": Setting(":doc:`/gradient-check`"),
    # 3 hidden units: the same check with 2352 instead of 39200 weights in W1
    "gradient_check.py": Setting(":doc:`/gradient-check`", ("--hidden", "3"), mnist=True),
    "backend_agreement.py": Setting(":doc:`/backends`"),
    "train_mnist.py": Setting(
        ":doc:`/training` (seeds 0-4, the book's runs), :doc:`/performance` (timings)",
        ("--iters", "300"),  # half an epoch: only the book's first evaluation, then the last
        plot=True,
        mnist=True,
    ),
    "optimizer_compare_mnist.py": Setting(_TECHNIQUES, ("--iters", "30"), plot=True, mnist=True),
    "batch_norm_test.py": Setting(
        _TECHNIQUES,
        ("--epochs", "2", "--scales", "2", "--train-size", "200"),
        plot=True,
        mnist=True,
    ),
    "overfit_weight_decay.py": Setting(_TECHNIQUES, ("--epochs", "3"), plot=True, mnist=True),
    "overfit_dropout.py": Setting(_TECHNIQUES, ("--epochs", "3"), plot=True, mnist=True),
    "train_save_reload.py": Setting(
        _TECHNIQUES, ("--epochs", "1", "--train-size", "2000"), mnist=True
    ),
    "visualize_filter.py": Setting(
        ":doc:`/convolution`", _CNN, docs_short=True, plot=True, mnist=True
    ),
    "misclassified_mnist.py": Setting(
        ":doc:`/convolution`", _CNN, docs_short=True, plot=True, mnist=True
    ),
    # NumPy multiplies float16 matrices without BLAS, slowly: 200 test images
    "half_float_network.py": Setting(
        ":doc:`/convolution`", (*_CNN, "--test-size", "200"), docs_short=True, mnist=True
    ),
    "train_convnet.py": Setting(
        ":doc:`/performance` (the book's protocol, seeds 0-2)",
        ("--epochs", "3", "--train-size", "1000", "--test-size", "1000"),
        docs_short=True,
        mnist=True,
    ),
    "train_deepnet.py": Setting(
        ":doc:`/performance` (the book's protocol)",
        ("--epochs", "2", "--train-size", "500", "--test-size", "500"),
        docs_short=True,
        mnist=True,
    ),
}
