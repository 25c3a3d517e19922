"""The array libraries xprop knows, one class each, and the registry that selects them by name.

:class:`ArrayLibrary` is the base class; :mod:`xprop.libraries.numpy`,
:mod:`~xprop.libraries.cupy`, :mod:`~xprop.libraries.torch`, :mod:`~xprop.libraries.jax` and
:mod:`~xprop.libraries.array_api_strict` hold one subclass each.  :func:`register_backend`
adds a user's subclass; :func:`library_for` finds the library of a namespace (the one
question compute code may ask, for its caches).
"""

from __future__ import annotations

from typing import Any

from xprop.libraries._base import ArrayLibrary, BackendError
from xprop.libraries.array_api_strict import ArrayApiStrictLibrary
from xprop.libraries.cupy import CuPyLibrary
from xprop.libraries.jax import JaxLibrary
from xprop.libraries.numpy import NumPyLibrary
from xprop.libraries.torch import TorchLibrary
from xprop.typing import Namespace

__all__ = [
    "ArrayLibrary",
    "BackendError",
    "known_backends",
    "library",
    "library_for",
    "register_backend",
]

_REGISTRY: dict[str, ArrayLibrary] = {}
_BY_NAMESPACE: dict[int, ArrayLibrary] = {}
_GENERIC = ArrayLibrary()  # the standard's defaults, for a namespace nobody registered


def register_backend(
    library: type[ArrayLibrary], *legacy: Any, overwrite: bool = False, **legacy_hooks: Any
) -> ArrayLibrary:
    """Make an array library selectable by its ``name``, with every hook the built-ins have.

    Parameters
    ----------
    library : type
        A subclass of :class:`ArrayLibrary` that sets ``name`` (and ``module``) and
        defines ``load()``; see :class:`ArrayLibrary` for the hooks it may override.
    overwrite : bool
        Replace an existing registration of the same name.

    Returns
    -------
    ArrayLibrary
        The instance now registered.

    Raises
    ------
    BackendError
        ``library`` is not such a class, has no name, or the name is taken.
    """
    if (
        legacy
        or legacy_hooks
        or not (isinstance(library, type) and issubclass(library, ArrayLibrary))
    ):
        # Also what the old form register_backend(name, factory, to_numpy=...) meets.
        raise BackendError(
            f"register_backend takes a subclass of xprop.ArrayLibrary, got {library!r}; "
            "write e.g. `class Dpnp(xprop.ArrayLibrary): name = 'dpnp'; module = 'dpnp'` "
            "with `def load(self): return importlib.import_module('dpnp')`"
        )
    name = library.name
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BackendError(
            f"{library.__name__}.name must be a non-empty string without surrounding "
            f"spaces, got {name!r}"
        )
    if library.load is ArrayLibrary.load:
        raise BackendError(
            f"{library.__name__} must define load(), returning the library's array-API "
            "namespace (and raising ImportError when it is not installed)"
        )
    if name in _REGISTRY and not overwrite:
        raise BackendError(
            f"backend {name!r} is already registered; pass overwrite=True to replace it"
        )
    instance = library()
    _REGISTRY[name] = instance
    _BY_NAMESPACE.clear()  # a namespace may now belong to the new library
    return instance


def unregister_backend(name: str) -> None:
    """Remove a registered backend (tests and plugins that clean up after themselves)."""
    _REGISTRY.pop(name, None)
    _BY_NAMESPACE.clear()


def known_backends() -> list[str]:
    """Names of every registered backend, built-ins first."""
    return list(_REGISTRY)


def library(name: str) -> ArrayLibrary:
    """The registered library called ``name``.

    Raises :class:`BackendError` listing the known names when there is none.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; choose one of: {', '.join(_REGISTRY)} "
            "(or add your own with xprop.register_backend)"
        ) from None


def library_for(xp: Namespace) -> ArrayLibrary:
    """The registered library whose namespace is ``xp`` (the standard's defaults if none)."""
    found = _BY_NAMESPACE.get(id(xp))
    if found is None:
        found = next((lib for lib in _REGISTRY.values() if lib.owns(xp)), _GENERIC)
        _BY_NAMESPACE[id(xp)] = found
    return found


for _builtin in (
    NumPyLibrary,
    CuPyLibrary,
    TorchLibrary,
    JaxLibrary,
    ArrayApiStrictLibrary,
):
    register_backend(_builtin)
