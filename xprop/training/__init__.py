"""Training: the step protocol, the eager and compiled steps, and the book's ``Trainer``.

:mod:`~xprop.training.step` holds the protocol and the eager step,
:mod:`~xprop.training.jit` the JAX step, :mod:`~xprop.training.cuda_graph` the PyTorch
CUDA-graph step, :mod:`~xprop.training.compile` the choice between them and
:mod:`~xprop.training.trainer` the ``Trainer``.  The names of the former module
``xprop.training`` (``TrainStep``, ``EagerStep``, ``check_learning_rate``) import from here.
"""

from xprop.training.step import EagerStep, TrainStep, check_learning_rate
from xprop.training.trainer import Trainer

__all__ = ["EagerStep", "TrainStep", "Trainer", "check_learning_rate"]
