"""Type aliases of xprop's public API, for type checkers and readers.

xprop's functions take and return arrays of whichever library the caller uses, so their
signatures say :data:`Array` where the value is an array.  The Python array API standard
defines the behaviour of an array but no runtime type to name it by (``numpy.ndarray``,
``torch.Tensor`` and ``jax.Array`` share no base class), and the libraries' own type
stubs disagree with the standard in places (``torch.Tensor`` has no
``__array_namespace__``; NumPy types its operators by dtype), so a ``Protocol`` listing
the standard's attributes would reject real arrays of some library or need a cast at every
call.  :data:`Array` is therefore an alias of ``Any``: a type checker accepts any array
there, and a reader (and an IDE's hover text) sees that an array is meant.

Type-check your own code against xprop as against any typed package: xprop ships a
``py.typed`` marker, so ``mypy your_script.py`` (or pyright) reads xprop's annotations.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["Array", "Namespace"]

Array: TypeAlias = Any
"""An array of any array-API library: ``numpy.ndarray``, ``torch.Tensor``, ``jax.Array``,
``cupy.ndarray``, an ``array_api_strict`` array (``Any`` to a type checker)."""

Namespace: TypeAlias = Any
"""An array-API namespace, the ``xp`` of the standard: ``Backend.xp``, or what
``array_api_compat.array_namespace(x)`` returns for an array ``x`` (a module such as
``array_api_compat.numpy``, ``array_api_strict`` or ``jax.numpy``; ``Any`` to a type
checker)."""
