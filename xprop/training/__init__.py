"""Training: the step protocol, the eager and compiled steps, and the book's ``Trainer``.

:mod:`~xprop.training.step` holds the protocol and the eager step,
:mod:`~xprop.training.jit` the JAX step, :mod:`~xprop.training.cuda_graph` the PyTorch
CUDA-graph step and :mod:`~xprop.training.trainer` the ``Trainer``.
"""
