"""Buying apples (ch. 5.4.1)
=========================

Forward and backward through two multiplication layers.  2 apples at 100 each, with 10%
consumption tax: the price is 220, and backpropagating ``dprice = 1`` gives d price / d
apple = 2.2, d price / d apple_num = 110 and d price / d tax = 200.  The output matches the
book::

    220
    2.2 110 200

The values are 0-d arrays of the selected backend (``--backend``, default
``$XPROP_BACKEND`` or numpy); plain Python numbers work the same way.

``--plot FILE.png`` draws the computational graph with these values on its edges; the
documentation's figure comes from ``--plot docs/_static/graph_apple.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common
import _graph

import xprop
from xprop.nn.layers import MulLayer


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
    tax = value(1.1)

    mul_apple_layer = MulLayer()
    mul_tax_layer = MulLayer()

    # forward
    apple_price = mul_apple_layer.forward(apple, apple_num)
    price = mul_tax_layer.forward(apple_price, tax)

    # backward
    dprice = 1.0
    dapple_price, dtax = mul_tax_layer.backward(dprice)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)

    # ':g' prints 220 rather than 220.00000000000003 (1.1 has no exact binary form).
    print(f"{float(price):g}")
    print(f"{float(dapple):g} {float(dapple_num):g} {float(dtax):g}")

    def draw(path: Path) -> None:  # each edge of the graph, labelled with the values above
        _graph.draw(
            path,
            _graph.APPLE,
            (apple, apple_num, apple_price, tax, price),
            (dapple, dapple_num, dapple_price, dtax, dprice),
        )

    return _common.write_outputs(("--plot", plot, draw))


if __name__ == "__main__":
    _common.run(main)
