"""Draw the computational graphs of the shopping examples (forward and backward values).

Run from the repository root to regenerate the committed figures:

    python docs/_scripts/graph_figures.py

writes ``docs/_static/graph_apple.png`` and ``docs/_static/graph_apple_orange.png``.
Forward values are drawn in black above each edge, backward values (derivatives of the
price) in red below it.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch

STATIC = Path(__file__).resolve().parents[1] / "_static"
FORWARD, BACKWARD = "#222222", "#c0392b"
RADIUS = 0.32


def draw(path: Path, inputs: dict, nodes: dict, edges: list, output: tuple, size: tuple) -> None:
    fig, ax = plt.subplots(figsize=size)
    ax.set_aspect("equal")
    ax.axis("off")
    for name, (x, y) in inputs.items():
        ax.text(x, y, name, ha="right", va="center", fontsize=11, family="monospace")
    for _, (x, y, op) in nodes.items():
        ax.add_patch(Circle((x, y), RADIUS, facecolor="#eef3fb", edgecolor="#2c5aa0", lw=1.5))
        ax.text(x, y, op, ha="center", va="center", fontsize=15, color="#2c5aa0")
    ox, oy, oname = output
    ax.text(ox, oy, oname, ha="left", va="center", fontsize=11, family="monospace")

    def anchor(name: str, toward: tuple) -> tuple:
        if name in nodes:
            x, y, _ = nodes[name]
            dx, dy = toward[0] - x, toward[1] - y
            d = math.hypot(dx, dy)
            return x + RADIUS * dx / d, y + RADIUS * dy / d
        if name in inputs:
            x, y = inputs[name]
            return x + 0.12, y
        return ox - 0.12, oy

    for src, dst, fwd, bwd in edges:
        p_src = inputs.get(src) or nodes.get(src, (ox, oy))[:2]
        p_dst = nodes[dst][:2] if dst in nodes else (ox, oy)
        a, b = anchor(src, p_dst), anchor(dst, p_src)
        ax.add_patch(
            FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.3, color="#555555")
        )
        # Edges from the inputs converge: label them near their start, where they are apart.
        t = 0.3 if src in inputs else 0.5
        mx, my = a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])
        ax.text(mx, my + 0.13, fwd, ha="center", va="bottom", fontsize=11, color=FORWARD)
        ax.text(
            mx,
            my - 0.13,
            bwd,
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
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def main() -> None:
    STATIC.mkdir(exist_ok=True)
    draw(
        STATIC / "graph_apple.png",
        inputs={"apple": (0, 2.0), "apple_num": (0, 1.0), "tax": (0, 0.0)},
        nodes={"mul_apple": (2.4, 1.5, "×"), "mul_tax": (4.8, 0.75, "×")},
        edges=[
            ("apple", "mul_apple", "100", "2.2"),
            ("apple_num", "mul_apple", "2", "110"),
            ("mul_apple", "mul_tax", "200", "1.1"),
            ("tax", "mul_tax", "1.1", "200"),
            ("mul_tax", "price", "220", "1"),
        ],
        output=(6.6, 0.75, "price"),
        size=(7.0, 3.0),
    )
    draw(
        STATIC / "graph_apple_orange.png",
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
        edges=[
            ("apple", "mul_apple", "100", "2.2"),
            ("apple_num", "mul_apple", "2", "110"),
            ("orange", "mul_orange", "150", "3.3"),
            ("orange_num", "mul_orange", "3", "165"),
            ("mul_apple", "add", "200", "1.1"),
            ("mul_orange", "add", "450", "1.1"),
            ("add", "mul_tax", "650", "1.1"),
            ("tax", "mul_tax", "1.1", "650"),
            ("mul_tax", "price", "715", "1"),
        ],
        output=(8.6, 1.25, "price"),
        size=(8.5, 4.2),
    )


if __name__ == "__main__":
    main()
