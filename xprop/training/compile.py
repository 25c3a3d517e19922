"""``net.compile_step(optimizer)``: the step of the kind the network's library names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xprop.optimizers import Optimizer
from xprop.training.cuda_graph import CudaGraphStep
from xprop.training.jit import JitStep
from xprop.training.step import EagerStep, TrainStep, as_optimizer

__all__ = ["STEPS", "compilable", "compile_step"]

#: What a compiled step uses of a network: :class:`xprop.nets.network.Network`'s model.
_MODEL = ("backend", "params", "gradient", "layers", "last_layer", "buffer_layers")


def compilable(net: Any) -> bool:
    """Whether ``net`` follows the network model a compiled step trains (a ``Network``)."""
    return all(hasattr(net, name) for name in _MODEL)


#: The training step of each kind an array library may name (``ArrayLibrary.step_kind``).
STEPS: dict[str, Callable[[Any, Optimizer], TrainStep]] = {
    EagerStep.kind: EagerStep,
    JitStep.kind: JitStep,
    CudaGraphStep.kind: CudaGraphStep,
}


def compile_step(net: Any, optimizer: Optimizer | float) -> TrainStep:
    """The fastest training step for ``net`` with ``optimizer`` (a learning rate: SGD).

    Raises ``TypeError`` for a network that is not a :class:`~xprop.nets.network.Network`
    (:func:`compilable`) or an optimizer that is neither an
    :mod:`xprop.optimizers` instance nor a learning rate; ``ValueError``/``TypeError`` for
    a bad learning rate.
    """
    missing = [name for name in _MODEL if not hasattr(net, name)]
    if missing:
        raise TypeError(
            f"{type(net).__name__} cannot be trained by a compiled step: it lacks "
            f"{', '.join(missing)}; build it on xprop.nets.network.Network (params, layers "
            "and last_layer in __init__), or train it with Trainer(..., compiled=False)"
        )
    optimizer = as_optimizer(optimizer)
    kind = net.backend.library.step_kind(net.backend.device)
    return STEPS[kind](net, optimizer)
