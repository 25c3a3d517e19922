"""Training: the step protocol and the steps, and the book's ``Trainer``.

:mod:`~xprop.training.step` holds the protocol and the eager step (the book's loop body),
:mod:`~xprop.training.jit` the JAX step, :mod:`~xprop.training.cuda_graph` the PyTorch
CUDA-graph step, :mod:`~xprop.training.compiled` what those two need from a network,
:mod:`~xprop.training.compile` the choice between them and :mod:`~xprop.training.trainer`
the ``Trainer``.
"""
