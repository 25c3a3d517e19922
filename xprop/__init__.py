"""xprop: error backpropagation from *Deep Learning from Scratch* (ch. 5) on any array library.

The same layer code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict: compute code
infers its namespace from its inputs; :mod:`xprop.backend` decides where new arrays live.
The book's chapter-6 toolkit — optimizers, BatchNormalization, Dropout, the multi-layer
networks, the Trainer — and portable safetensors checkpoints come with it.
:func:`show_versions` (``python -m xprop info``) prints what a bug report needs.
The package is typed (``py.typed``): arrays appear in its signatures as ``xprop.Array``
(:data:`xprop.typing.Array`).
"""

from xprop import auto  # noqa: F401  (registers the backend name "auto")
from xprop._version import __version__
from xprop.backend import (
    ArrayLibrary,
    Backend,
    BackendError,
    available_backends,
    get_backend,
    register_backend,
    set_backend,
    use_backend,
)
from xprop.checkpoint import CheckpointError
from xprop.datasets import DatasetError, load_mnist
from xprop.gradcheck import GradientCheckResult, check_backward
from xprop.gradient import numerical_gradient
from xprop.info import show_versions
from xprop.nets.deep_conv_net import DeepConvNet
from xprop.nets.multi_layer_net import MultiLayerNet, MultiLayerNetExtend
from xprop.nets.simple_conv_net import SimpleConvNet
from xprop.nets.two_layer_net import TwoLayerNet
from xprop.nn import functions as _functions
from xprop.nn.batch_norm import BatchNormalization
from xprop.nn.conv import Convolution
from xprop.nn.dropout import Dropout
from xprop.nn.functions import (
    cross_entropy_error,
    log_softmax,
    mean_squared_error,
    one_hot,
    relu,
    sigmoid,
    softmax,
    validate_labels,
)
from xprop.nn.im2col import col2im, im2col
from xprop.nn.layers import AddLayer, Affine, MSELoss, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from xprop.nn.pooling import Pooling
from xprop.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, NesterovPaper, RMSprop
from xprop.training.step import TrainStep
from xprop.training.trainer import Trainer
from xprop.typing import Array

# The book's ``common/functions.py``: ``from xprop import functions as F``.
functions = _functions

__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "AddLayer",
    "Affine",
    "Array",
    "ArrayLibrary",
    "Backend",
    "BackendError",
    "BatchNormalization",
    "CheckpointError",
    "Convolution",
    "DatasetError",
    "DeepConvNet",
    "Dropout",
    "GradientCheckResult",
    "MSELoss",
    "Momentum",
    "MulLayer",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Nesterov",
    "NesterovPaper",
    "Pooling",
    "RMSprop",
    "Relu",
    "Sigmoid",
    "SimpleConvNet",
    "SoftmaxWithLoss",
    "TrainStep",
    "Trainer",
    "TwoLayerNet",
    "__version__",
    "available_backends",
    "check_backward",
    "col2im",
    "cross_entropy_error",
    "functions",
    "get_backend",
    "im2col",
    "load_mnist",
    "log_softmax",
    "mean_squared_error",
    "numerical_gradient",
    "one_hot",
    "register_backend",
    "relu",
    "set_backend",
    "show_versions",
    "sigmoid",
    "softmax",
    "use_backend",
    "validate_labels",
]
