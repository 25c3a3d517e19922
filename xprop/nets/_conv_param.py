"""The book's ``conv_param`` dicts: checked once, for both convolutional networks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xprop.checks import check_count

__all__ = ["check_conv_param", "check_input_dim", "conv_output_side"]

_KEYS = ("filter_num", "filter_size", "pad", "stride")


def check_conv_param(conv_param: Any, name: str = "conv_param") -> dict[str, int]:
    """``conv_param`` as a dict of the book's four integers, or a clear error.

    ``{'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1}``: every key present, no
    other key (a misspelt one is named with the keys it may have meant), ``filter_num``,
    ``filter_size`` and ``stride`` at least 1, ``pad`` at least 0.
    """
    if not isinstance(conv_param, Mapping):
        raise TypeError(
            f"{name} must be a dict like {{'filter_num': 30, 'filter_size': 5, 'pad': 0, "
            f"'stride': 1}}, got {type(conv_param).__name__}"
        )
    unknown = sorted(set(conv_param) - set(_KEYS))
    missing = [key for key in _KEYS if key not in conv_param]
    if unknown or missing:
        problems = [f"has unknown keys {unknown}"] if unknown else []
        problems += [f"lacks {missing}"] if missing else []
        raise ValueError(f"{name} {' and '.join(problems)}; it takes exactly {list(_KEYS)}")
    return {
        key: check_count(conv_param[key], f"{name}['{key}']", minimum=0 if key == "pad" else 1)
        for key in _KEYS
    }


def check_input_dim(input_dim: Any) -> tuple[int, int, int]:
    """``input_dim`` ``(C, H, W)`` as three integers of at least 1."""
    if not isinstance(input_dim, Sequence) or len(input_dim) != 3:
        raise ValueError(f"input_dim must be (channels, height, width), got {input_dim!r}")
    c, h, w = (check_count(v, f"input_dim[{i}]") for i, v in enumerate(input_dim))
    return c, h, w


def conv_output_side(side: int, param: dict[str, int], name: str) -> int:
    """``(side + 2*pad - filter_size) // stride + 1``; a clear error when it is below 1."""
    out = (side + 2 * param["pad"] - param["filter_size"]) // param["stride"] + 1
    if out < 1:
        raise ValueError(
            f"{name}: a {param['filter_size']}x{param['filter_size']} filter does not fit an "
            f"input of side {side} padded by {param['pad']}: the output would be empty; use "
            "a smaller filter or more padding"
        )
    return out
