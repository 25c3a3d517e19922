"""``net.compile_step(optimizer)``: the step of the kind the network's library names."""

from __future__ import annotations

from typing import Any

from xprop.training.cuda_graph import CudaGraphStep
from xprop.training.jit import JitStep
from xprop.training.step import EagerStep, TrainStep, as_optimizer, check_network

__all__ = ["STEPS", "compile_step"]

#: The training step of each kind an array library may name (``ArrayLibrary.step_kind``).
STEPS: dict[str, type] = {
    EagerStep.kind: EagerStep,
    JitStep.kind: JitStep,
    CudaGraphStep.kind: CudaGraphStep,
}


def compile_step(net: Any, optimizer: Any) -> TrainStep:
    """The fastest training step for ``net`` with ``optimizer`` (a learning rate: SGD).

    Raises ``TypeError`` for a network without the model a step trains
    (:func:`~xprop.training.step.check_network`) or an optimizer that is neither an
    :mod:`xprop.optimizers` instance nor a learning rate; ``ValueError``/``TypeError`` for
    a bad learning rate.
    """
    check_network(net)
    optimizer = as_optimizer(optimizer)
    kind = net.backend.library.step_kind(net.backend.device)
    return STEPS[kind](net, optimizer)
