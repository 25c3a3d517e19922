"""The version of xprop, in a module of its own: any module may import it without a cycle.

``xprop.__version__`` re-exports it; the build reads it from here (pyproject.toml).
"""

__version__ = "0.1.0"
