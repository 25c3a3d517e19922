"""Buying apples and oranges (ch. 5.4.2)
=====================================

Multiplication and addition layers together.  2 apples at 100 and 3 oranges at 150, with 10%
tax: the price is 715.  Backpropagating ``dprice = 1`` gives the book's gradients
(apple_num, apple, orange, orange_num, tax)::

    715
    110 2.2 3.3 165 650

The values are 0-d arrays of the selected backend (``--backend``, default
``$XPROP_BACKEND`` or numpy).

``--plot FILE.png`` draws the computational graph with these values on its edges; the
documentation's figure comes from ``--plot docs/_static/graph_apple_orange.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common
import _graph

import xprop
from xprop.nn.layers import AddLayer, MulLayer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--backend", help="array library (default: $XPROP_BACKEND or numpy)")
    parser.add_argument(
        "--plot", type=Path, help="draw the computational graph with these values to this PNG"
    )
    args = parser.parse_args(argv)
    plot = _common.check_output("--plot", args.plot, image=True, formats=("png",))
    backend = xprop.get_backend(args.backend)

    def value(v: float) -> Any:
        """A 0-d array of the backend, on its device."""
        return backend.asarray(v)

    apple = value(100.0)
    apple_num = value(2.0)
    orange = value(150.0)
    orange_num = value(3.0)
    tax = value(1.1)

    mul_apple_layer = MulLayer()
    mul_orange_layer = MulLayer()
    add_apple_orange_layer = AddLayer()
    mul_tax_layer = MulLayer()

    # forward
    apple_price = mul_apple_layer.forward(apple, apple_num)
    orange_price = mul_orange_layer.forward(orange, orange_num)
    all_price = add_apple_orange_layer.forward(apple_price, orange_price)
    price = mul_tax_layer.forward(all_price, tax)

    # backward
    dprice = 1.0
    dall_price, dtax = mul_tax_layer.backward(dprice)
    dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
    dorange, dorange_num = mul_orange_layer.backward(dorange_price)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)

    print(f"{float(price):g}")
    grads = (dapple_num, dapple, dorange, dorange_num, dtax)
    print(" ".join(f"{float(g):g}" for g in grads))

    def draw(path: Path) -> None:  # each edge of the graph, labelled with the values above
        _graph.draw(
            path,
            _graph.APPLE_ORANGE,
            (
                apple,
                apple_num,
                orange,
                orange_num,
                apple_price,
                orange_price,
                all_price,
                tax,
                price,
            ),
            (
                dapple,
                dapple_num,
                dorange,
                dorange_num,
                dapple_price,
                dorange_price,
                dall_price,
                dtax,
                dprice,
            ),
        )

    return _common.write_outputs(("--plot", plot, draw))


if __name__ == "__main__":
    _common.run(main)
