"""xprop: error backpropagation from *Deep Learning from Scratch* (ch. 5) on any array library.

The same layer code runs on NumPy, CuPy, PyTorch, JAX and array-api-strict: compute code
infers its namespace from its inputs; :mod:`xprop.backend` decides where new arrays live.
"""

from xprop.backend import (
    Backend,
    BackendError,
    available_backends,
    get_backend,
    register_backend,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "__version__",
    "available_backends",
    "get_backend",
    "register_backend",
    "set_backend",
    "use_backend",
]
