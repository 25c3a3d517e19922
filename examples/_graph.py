"""Drawing the computational graphs of the shopping examples (``buy_apple*.py --plot``).

Not an example itself.  Each edge is labelled with the value the example computed, forward
in black above it and the derivative of the price in red below it, so the figures in the
documentation come from running the layers, never typed by hand::

    python examples/buy_apple.py --plot docs/_static/graph_apple.png
    python examples/buy_apple_orange.py --plot docs/_static/graph_apple_orange.png
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xprop.files import write_atomically

FORWARD, BACKWARD = "#222222", "#c0392b"
RADIUS = 0.32


@dataclass(frozen=True)
class Layout:
    """Where a graph's inputs, nodes (x, y, operator) and output sit; its edges in order."""

    inputs: dict[str, tuple[float, float]]
    nodes: dict[str, tuple[float, float, str]]
    edges: tuple[tuple[str, str], ...]
    output: tuple[float, float, str]
    size: tuple[float, float]


APPLE = Layout(
    inputs={"apple": (0, 2.0), "apple_num": (0, 1.0), "tax": (0, 0.0)},
    nodes={"mul_apple": (2.4, 1.5, "×"), "mul_tax": (4.8, 0.75, "×")},
    edges=(
        ("apple", "mul_apple"),
        ("apple_num", "mul_apple"),
        ("mul_apple", "mul_tax"),
        ("tax", "mul_tax"),
        ("mul_tax", "price"),
    ),
    output=(6.6, 0.75, "price"),
    size=(7.0, 3.0),
)

APPLE_ORANGE = Layout(
    inputs={
        "apple": (0, 4.0),
        "apple_num": (0, 3.0),
        "orange": (0, 2.0),
        "orange_num": (0, 1.0),
        "tax": (0, 0.0),
    },
    nodes={
        "mul_apple": (2.4, 3.5, "×"),
        "mul_orange": (2.4, 1.5, "×"),
        "add": (4.6, 2.5, "+"),
        "mul_tax": (6.8, 1.25, "×"),
    },
    edges=(
        ("apple", "mul_apple"),
        ("apple_num", "mul_apple"),
        ("orange", "mul_orange"),
        ("orange_num", "mul_orange"),
        ("mul_apple", "add"),
        ("mul_orange", "add"),
        ("add", "mul_tax"),
        ("tax", "mul_tax"),
        ("mul_tax", "price"),
    ),
    output=(8.6, 1.25, "price"),
    size=(8.5, 4.2),
)


def draw(path: Path, layout: Layout, forward: Sequence[Any], backward: Sequence[Any]) -> None:
    """Draw ``layout`` with each edge's forward value and derivative (one of each per edge,
    in the order of ``layout.edges``; 0-d arrays or numbers) to the PNG ``path``, atomically.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch

    if not len(forward) == len(backward) == len(layout.edges):
        raise ValueError(f"{len(layout.edges)} edges need as many forward and backward values")
    inputs, nodes = layout.inputs, layout.nodes
    ox, oy, oname = layout.output
    fig, ax = plt.subplots(figsize=layout.size)
    ax.set_aspect("equal")
    ax.axis("off")
    for name, (x, y) in inputs.items():
        ax.text(x, y, name, ha="right", va="center", fontsize=11, family="monospace")
    for x, y, op in nodes.values():
        ax.add_patch(Circle((x, y), RADIUS, facecolor="#eef3fb", edgecolor="#2c5aa0", lw=1.5))
        ax.text(x, y, op, ha="center", va="center", fontsize=15, color="#2c5aa0")
    ax.text(ox, oy, oname, ha="left", va="center", fontsize=11, family="monospace")

    def position(name: str) -> tuple[float, float]:
        if name in inputs:
            return inputs[name]
        if name in nodes:
            return nodes[name][:2]
        return ox, oy

    def anchor(name: str, toward: tuple[float, float]) -> tuple[float, float]:
        """Where an edge leaves or enters ``name``: a node's rim, beside a label."""
        x, y = position(name)
        if name in nodes:
            dx, dy = toward[0] - x, toward[1] - y
            d = math.hypot(dx, dy)
            return x + RADIUS * dx / d, y + RADIUS * dy / d
        return (x + 0.12, y) if name in inputs else (x - 0.12, y)

    for (src, dst), fwd, bwd in zip(layout.edges, forward, backward, strict=True):
        a, b = anchor(src, position(dst)), anchor(dst, position(src))
        ax.add_patch(
            FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.3, color="#555555")
        )
        # Edges from the inputs converge: label them near their start, where they are apart.
        t = 0.3 if src in inputs else 0.5
        mx, my = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        # ':g' prints 220 rather than 220.00000000000003 (1.1 has no exact binary form).
        ax.text(
            mx, my + 0.13, f"{float(fwd):g}", ha="center", va="bottom", fontsize=11, color=FORWARD
        )
        ax.text(
            mx,
            my - 0.13,
            f"{float(bwd):g}",
            ha="center",
            va="top",
            fontsize=11,
            color=BACKWARD,
            fontweight="bold",
        )
    xs = [x for x, _ in inputs.values()] + [x for x, _, _ in nodes.values()] + [ox]
    ys = [y for _, y in inputs.values()] + [y for _, y, _ in nodes.values()] + [oy]
    ax.set_xlim(min(xs) - 1.6, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.text(min(xs) - 1.5, min(ys) - 0.55, "forward value", color=FORWARD, fontsize=9, va="bottom")
    ax.text(
        min(xs) + 0.2,
        min(ys) - 0.55,
        "backward: d price / d (edge)",
        color=BACKWARD,
        fontsize=9,
        va="bottom",
        fontweight="bold",
    )
    fig.tight_layout()
    try:
        write_atomically(
            path,
            lambda tmp: fig.savefig(
                tmp, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15
            ),
        )
    finally:
        plt.close(fig)
