"""What a compiled training step needs from a network, and the network never sees.

A compiled step (``jax.jit``, a CUDA graph) traces the book's loop body once and runs the
trace again and again.  So it works on a :func:`replica` of the network (the trace's
arrays stay in the replica's layers, never in the network's), hands the replica its
running statistics and takes them back without checks (:func:`set_buffers`: inside a
trace there is nothing to check them against), and draws Dropout masks from keys it draws
ahead on the host, in the order the eager step would draw them, and passes in as inputs
of the compiled program (:func:`random_layers`, :func:`draw_keys`, :class:`KeyedMasks`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from xprop._namespace import namespace
from xprop.nn.dropout import HostMasks, hash_masks
from xprop.typing import Array

__all__ = [
    "KeyedMasks",
    "draw_keys",
    "random_layers",
    "replica",
    "scalar_dtype",
    "set_buffers",
    "use_keys",
]


def replica(net: Any) -> Any:
    """A copy of ``net`` whose layers are copies: a forward pass on it changes nothing of
    ``net``.  ``params`` is shared until the copy's is replaced.  Its loss layer does not
    range-check labels: a compiled step checks them before it runs
    (:class:`~xprop.training.step.LabelCheck`)."""
    twin = copy.copy(net)
    twin.layers = OrderedDict((name, copy.copy(layer)) for name, layer in net.layers.items())
    twin.last_layer = copy.copy(net.last_layer)
    if hasattr(twin.last_layer, "check_labels"):
        twin.last_layer.check_labels = False
    return twin


def set_buffers(net: Any, buffers: dict[str, Array]) -> None:
    """Set ``net``'s running statistics (``net.running_stats()``'s keys), unchecked."""
    for key, (name, attr) in net.buffer_layers.items():
        setattr(net.layers[name], attr, buffers[key])


def random_layers(net: Any) -> list[str]:
    """The names of ``net``'s layers that draw random masks (Dropout), in forward order."""
    return [
        name
        for name, layer in net.layers.items()
        if isinstance(getattr(layer, "masks", None), HostMasks)
    ]


def draw_keys(net: Any, names: list[str], steps: int) -> list[list[tuple[int, int]]] | None:
    """The mask keys of ``steps`` steps for the layers ``names``: host integers, nested
    ``[step][layer]``, drawn from each layer's generator in the order the eager step with
    ``device_masks=True`` draws them (step by step, layer by layer); ``None`` without such
    layers."""
    if not names:
        return None
    sources = [net.layers[name].masks for name in names]
    return [[source.keys() for source in sources] for _ in range(steps)]


def use_keys(twin: Any, names: list[str], keys: Array) -> None:
    """Make the replica's Dropout layers ``names`` draw from ``keys`` ``(L, 2)`` (int32)."""
    for j, name in enumerate(names):
        twin.layers[name].masks = KeyedMasks(keys[j])


class KeyedMasks:
    """Device masks (:func:`~xprop.nn.dropout.hash_masks`) from two keys on the device:
    inputs of the compiled program, so a replay draws new masks without the host."""

    def __init__(self, keys: Array) -> None:
        self.keys = keys

    def __call__(self, x: Array, ratio: float) -> Array:
        return hash_masks(namespace(x), x, ratio, self.keys[0], self.keys[1])


def scalar_dtype(backend: Any) -> Any:
    """The dtype of the learning rate and the update count in a compiled step: the
    optimizer's arithmetic dtype, float32 for a float16 network (mixed precision), else the
    network's."""
    xp = backend.xp
    return xp.float32 if backend.dtype_name == "float16" else backend.dtype
