"""Overfitting and Dropout (ch. 6.4.3)
===================================

The book's ``ch06/overfit_dropout.py``.  The overfitting setup of
``overfit_weight_decay.py`` (seven layers, the first 300 MNIST training images, SGD with
learning rate 0.01, batches of 100), here with Dropout after every hidden activation
(``--dropout-ratio``, the book's 0.2; 0 for none) and trained for 301 epochs by the book's
:class:`~xprop.Trainer`.  Dropout narrows the gap between training and test accuracy; both
are plotted per epoch (the book's figure 6-23).

Usage::

    python examples/overfit_dropout.py                        # writes ./overfit_dropout.png
    python examples/overfit_dropout.py --dropout-ratio 0      # without Dropout
    python examples/overfit_dropout.py --epochs 3 --plot ''   # short
"""

from __future__ import annotations

import _common

import xprop


def main() -> int:
    p = _common.parser(__doc__, "overfit_dropout.png")
    p.add_argument("--epochs", type=int, default=301, help="epochs (the book's 301)")
    p.add_argument(
        "--dropout-ratio", type=float, default=0.2, help="dropout ratio (0.2; 0: no Dropout)"
    )
    p.add_argument("--train-size", type=int, default=300, help="training images (300)")
    args = p.parse_args()
    _common.positive(p, args, "epochs", "train_size")
    _common.within_mnist(p, args)
    if not 0 <= args.dropout_ratio < 1:
        p.error("--dropout-ratio must be in [0, 1)")
    plot = _common.check_output("--plot", args.plot, image=True)
    backend, x_train, t_train, x_test, t_test = _common.load(args, args.train_size)

    use_dropout = args.dropout_ratio > 0
    network = xprop.MultiLayerNetExtend(
        784,
        [100] * 6,
        10,
        use_dropout=use_dropout,
        dropout_ratio=args.dropout_ratio if use_dropout else 0.5,
        backend=backend,
        seed=args.seed,
    )
    trainer = xprop.Trainer(
        network,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=args.epochs,
        mini_batch_size=100,
        optimizer="sgd",
        optimizer_param={"lr": 0.01},
        verbose=True,
        seed=args.seed + 1,
    )
    trainer.train()
    what = f"Dropout {args.dropout_ratio:g}" if use_dropout else "no Dropout"
    title = f"{what}, {x_train.shape[0]} training images"
    acc = trainer.train_acc_list, trainer.test_acc_list
    return _common.write_outputs(
        ("--plot", plot, lambda path: _common.plot_accuracy(*acc, title, path))
    )


if __name__ == "__main__":
    _common.run(main)
