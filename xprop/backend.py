"""Backend selection: which array library, device and dtype new arrays are created with.

Compute code (layers, functions, gradients) never asks which library it runs on: it infers
the namespace from its inputs.  Only *creation* — weights, data, random numbers — needs to
know where arrays should live, and asks a :class:`Backend` for it.  What xprop knows about
each library lives in one class per library, in :mod:`xprop.libraries`.

A backend is chosen by name (argument, else ``XPROP_BACKEND``, else ``"numpy"``), with a
floating dtype (argument, else ``XPROP_DTYPE``, else ``float32``) and a device (argument,
else ``XPROP_DEVICE``, else the library's default: the current GPU for CuPy, CUDA for
PyTorch when it is available).  A few names stand for a way of choosing instead of a
library — *selectors*, registered by the module that defines them with
:func:`register_selector`: ``"auto"`` times the book's network on every available backend
and device and takes the fastest (:mod:`xprop.auto`).  Selection itself never imports a
network, so no network module depends on this one in a circle.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xprop._namespace import dtype_label, find_dtype
from xprop._namespace import dtype_name as _dtype_name
from xprop.libraries import ArrayLibrary as ArrayLibrary
from xprop.libraries import BackendError as BackendError
from xprop.libraries import known_backends as known_backends
from xprop.libraries import library, library_for
from xprop.libraries import register_backend as register_backend
from xprop.typing import Array, Namespace

# ArrayLibrary, BackendError, known_backends and register_backend are defined (and
# documented) in xprop.libraries; they are importable from here too (imported "as"
# themselves: an explicit re-export, which a type checker accepts).
__all__ = [
    "Backend",
    "HostRNG",
    "available_backends",
    "get_backend",
    "register_selector",
    "set_backend",
    "use_backend",
]

ENV_BACKEND = "XPROP_BACKEND"
ENV_DTYPE = "XPROP_DTYPE"
ENV_DEVICE = "XPROP_DEVICE"

_FLOAT_DTYPES = ("float32", "float64", "float16")


# --------------------------------------------------------------------------------------
# The Backend object
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """An array library, a device on it and a floating dtype: where xprop creates arrays.

    Attributes
    ----------
    name : str
        Registered name, e.g. ``"numpy"``, ``"cupy"``, ``"torch"``.
    xp : namespace
        The array-API namespace (from ``array_api_compat`` where the library needs it).
    device : object
        The library's device object; every array this backend creates lives there.
    dtype : dtype
        The floating dtype of created float data and weights (``xp.float32`` by default).
    library : ArrayLibrary
        What xprop knows about the library (:mod:`xprop.libraries`).
    """

    name: str
    xp: Any = field(repr=False)
    device: Any
    dtype: Any
    library: ArrayLibrary = field(repr=False, compare=False)

    # -- creation ---------------------------------------------------------------------

    def asarray(self, obj: Any, dtype: Any = None) -> Array:
        """A new array of this backend, on its device, holding a copy of ``obj``.

        ``obj`` is host data (a NumPy array, list or scalar) or an array of this library.
        Integer and boolean data keep their dtype; floating data gets :attr:`dtype` unless
        ``dtype`` (a dtype of this backend or a name such as ``"float64"``) is given.  The
        conversion happens on the host, so every backend receives bit-identical values.
        The result never shares memory with ``obj``: updating it in place (a training
        step's ``-=``) leaves the caller's array alone.
        """
        if (
            dtype is None
            and type(obj) is np.ndarray
            and obj.dtype.kind in "iu"
            and (obj.dtype.itemsize < 8 or self.library.supports_dtype("int64"))
        ):
            # Integer data (minibatch indices, labels) keep their dtype: nothing to convert.
            # The per-step path of the book's loop, so it skips the general one below.
            return self.library.from_host(self.xp, obj.copy(), None, self.device)
        target = None if dtype is None else _resolve_dtype(self.xp, dtype, self.name)
        if not _is_host(obj):
            out = self.xp.asarray(obj, device=self.device, copy=True)
            if target is not None and out.dtype != target:
                out = self.xp.astype(out, target)
            return out
        host = np.asarray(obj)
        if host.dtype.kind not in "biuf":
            raise BackendError(
                f"cannot put data of dtype {host.dtype} on backend {self.name!r}; "
                "pass numbers (bool, integer or floating)"
            )
        if target is None:
            if host.dtype.kind == "f":
                target = self.dtype
            else:
                # JAX without x64 has no 64-bit integers: narrow on the host, quietly.
                if host.dtype.itemsize == 8 and not self.library.supports_dtype("int64"):
                    host = host.astype(host.dtype.str[:-1] + "4")
                target = _host_to_xp_dtype(self.xp, host.dtype)
        target_name = _dtype_name(self.xp, target)
        if not self.library.supports_dtype(target_name):  # JAX without x64: no float64
            raise BackendError(
                f"backend {self.describe()} cannot hold {target_name} arrays right now; "
                + self.library.dtype_hint(target_name)
            )
        converted = np.asarray(host, dtype=np.dtype(target_name), order="C")
        if isinstance(obj, np.ndarray) and np.may_share_memory(converted, obj):
            converted = converted.copy()  # libraries on the CPU would share it
        return self.library.from_host(self.xp, converted, target, self.device)

    def zeros(self, shape: int | Sequence[int], dtype: Any = None) -> Array:
        """``xp.zeros`` on this backend's device, in :attr:`dtype` unless told otherwise."""
        target = self.dtype if dtype is None else _resolve_dtype(self.xp, dtype, self.name)
        name = _dtype_name(self.xp, target)
        if not self.library.supports_dtype(name):
            raise BackendError(
                f"backend {self.describe()} cannot hold {name} arrays right now; "
                + self.library.dtype_hint(name)
            )
        return self.xp.zeros(shape, dtype=target, device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """A NumPy copy of an array of this backend, on the host (waits for the device)."""
        return self.library.to_numpy(x)

    def rng(self, seed: int | None = None) -> HostRNG:
        """A random generator that draws on the host and returns arrays of this backend.

        The standard has no random module, so numbers come from
        ``numpy.random.default_rng(seed)``: one seed gives identical numbers on every backend.
        """
        return HostRNG(self, seed)

    def synchronize(self, *arrays: Array) -> None:
        """Wait until the device has finished its queued work, for honest timing.

        Pass the arrays being timed: JAX queues work per array, not per device.
        """
        self.library.synchronize(self.device, arrays)

    def activate(self) -> None:
        """Make this backend's device the one its library's kernels run on, in the calling
        thread (CuPy; nothing to do elsewhere: :meth:`ArrayLibrary.activate`)."""
        self.library.activate(self.device)

    @property
    def is_accelerator(self) -> bool:
        """Whether the device is a GPU-like accelerator."""
        return self.library.is_accelerator(self.device)

    @property
    def dtype_name(self) -> str:
        """The floating dtype as a plain string, e.g. ``"float32"``."""
        return _dtype_name(self.xp, self.dtype)

    def describe(self) -> str:
        """One line for logs: ``numpy (cpu, float32)``."""
        return f"{self.name} ({self.device}, {self.dtype_name})"


class HostRNG:
    """Seeded random numbers drawn on the host and delivered as arrays of one backend.

    Every method draws with ``numpy.random.Generator`` so the numbers do not depend on the
    backend; only the final copy to the device does.
    """

    def __init__(self, backend: Backend, seed: int | None = None) -> None:
        self.backend = backend
        self.generator = np.random.default_rng(seed)

    def normal(self, shape: int | Sequence[int], scale: float = 1.0, dtype: Any = None) -> Array:
        """Normal samples with mean 0 and standard deviation ``scale``, in the float dtype."""
        draw = self.generator.standard_normal(shape) * scale
        return self.backend.asarray(draw, dtype=dtype)

    def choice(self, n: int, size: int | Sequence[int], replace: bool = True) -> Array:
        """Integer indices in ``[0, n)`` (an int64 array on the device), like ``np.random.choice``.

        With replacement, one draw of shape ``(k, B)`` holds the same numbers as ``k``
        draws of ``B`` in a row: a training loop may draw a whole epoch's minibatch indices
        at once (one copy to the device) and get the run it would get step by step.
        """
        if replace:  # the same stream as Generator.choice, at a third of its cost
            host = self.generator.integers(0, n, size, dtype=np.int64)
        else:
            host = self.generator.choice(n, size, replace=False).astype(np.int64, copy=False)
        return self.backend.asarray(host)

    def permutation(self, n: int) -> Array:
        """A random permutation of ``range(n)`` (int64 array on the device)."""
        return self.backend.asarray(self.generator.permutation(n).astype(np.int64))


# --------------------------------------------------------------------------------------
# dtype and device helpers
# --------------------------------------------------------------------------------------


def _is_host(obj: Any) -> bool:
    return isinstance(obj, (np.ndarray, np.generic, list, tuple, int, float, bool))


def _host_to_xp_dtype(xp: Namespace, host: np.dtype) -> Any:
    name = "bool" if host.kind == "b" else host.name
    return getattr(xp, name)


def _resolve_dtype(xp: Namespace, dtype: Any, backend_name: str) -> Any:
    """A dtype of ``xp`` from a name (``"float64"``), a dtype of ``xp`` or a NumPy dtype."""
    resolved = find_dtype(xp, dtype)
    if resolved is None:
        have = [n for n in _FLOAT_DTYPES if getattr(xp, n, None) is not None]
        raise BackendError(
            f"unknown dtype {dtype!r} for backend {backend_name!r}: it has no such dtype; "
            f"use one of: {', '.join(have)} (or an integer dtype for labels)"
        )
    return resolved


def _float_dtype(xp: Namespace, dtype: Any, backend_name: str) -> Any:
    resolved = _resolve_dtype(xp, dtype, backend_name)
    if _dtype_name(xp, resolved) not in _FLOAT_DTYPES:
        have = [n for n in _FLOAT_DTYPES if getattr(xp, n, None) is not None]
        raise BackendError(
            f"dtype {dtype!r} is not a floating dtype; a backend's dtype must be one of "
            f"{', '.join(have)} (set XPROP_DTYPE or pass dtype=...)"
        )
    return resolved


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------

# The default set by use_backend: a context variable, so each thread and each asyncio task
# sees its own block; set_backend's process-wide default sits under it.
_context_default: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "xprop_backend_default", default=None
)
_default_lock = threading.Lock()
_process_default: dict[str, Any] = {}


def _load(name: str) -> tuple[ArrayLibrary, Namespace]:
    lib = library(name)
    try:
        xp = lib.namespace()
    except ImportError as exc:
        hint = f"; install it with: {lib.install_command()}" if lib.install_command() else ""
        raise BackendError(
            f"backend {name!r} is not installed ({exc.__class__.__name__}: {exc}){hint}"
        ) from exc
    if xp is None or not hasattr(xp, "asarray"):
        raise BackendError(
            f"{type(lib).__name__}.load() returned {xp!r}, not an array namespace; it must "
            "return the library's array-API namespace (a module with asarray, zeros, ...)"
        )
    lib.check(xp)
    return lib, xp


def get_backend(
    name: str | Backend | None = None, *, device: Any = None, dtype: Any = None
) -> Backend:
    """Build the :class:`Backend` to create arrays with.

    Parameters
    ----------
    name : str or Backend, optional
        A registered backend name, or ``"auto"`` (the fastest here for the book's
        network, see :func:`xprop.auto.choose_backend`); default: the one set by
        :func:`set_backend` / :func:`use_backend`, else ``$XPROP_BACKEND``, else
        ``"numpy"``.  A ``Backend`` is returned as is (with ``device``/``dtype`` applied if
        given).
    device : optional
        A device of that library or its name (``"cuda:1"``, ``"cpu"``, ``"device1"``);
        default ``$XPROP_DEVICE``, else the library's default device.
    dtype : str or dtype, optional
        ``"float32"`` (default), ``"float64"`` or ``"float16"``, or a dtype object;
        default ``$XPROP_DTYPE``, else float32.

    Raises
    ------
    BackendError
        Unknown name (lists the known ones), library not installed (names the pip extra),
        no usable device (e.g. CuPy without a GPU), or a dtype the device cannot hold.
    """
    if isinstance(name, Backend):
        if device is None and dtype is None:
            return name
        return get_backend(
            name.name,
            device=name.device if device is None else device,
            dtype=name.dtype if dtype is None else dtype,
        )
    return _build(name, device, dtype, _current_defaults())


def _build(name: str | None, device: Any, dtype: Any, defaults: dict[str, Any]) -> Backend:
    """:func:`get_backend` against the given program defaults (then env, then built-ins)."""
    sources = {"name": "", "device": "", "dtype": ""}  # where a value came from, for errors
    if name is None:
        name = defaults.get("name")
        if name is None and os.environ.get(ENV_BACKEND):
            name, sources["name"] = os.environ[ENV_BACKEND], ENV_BACKEND
        name = name or "numpy"
    if not isinstance(name, str):
        raise BackendError(
            f"a backend is chosen by its name, a string such as 'numpy' or 'torch', got "
            f"{type(name).__name__} {name!r}; see xprop.available_backends()"
        )
    name = name.strip()
    if device is None:
        # A default device belongs to the default library; another library has its own.
        if defaults.get("name") == name:
            device = defaults.get("device")
        elif defaults.get("name") is None and os.environ.get(ENV_BACKEND, name).strip() == name:
            device = os.environ.get(ENV_DEVICE) or None
            sources["device"] = ENV_DEVICE if device is not None else ""
    if dtype is None:
        dtype = defaults.get("dtype")
        if dtype is None and os.environ.get(ENV_DTYPE):
            dtype, sources["dtype"] = os.environ[ENV_DTYPE], ENV_DTYPE
        dtype = dtype or "float32"
    try:
        return _make(name, device, dtype)
    except BackendError as exc:
        # Name the environment variable that supplied the bad value: the user never typed
        # it in this program.
        culprit = next((v for v in sources.values() if v and v in _blamed(exc, sources)), "")
        if culprit:
            raise BackendError(f"{culprit}={os.environ[culprit]!r}: {exc}") from exc
        raise


def _blamed(exc: BackendError, sources: dict[str, str]) -> list[str]:
    """The environment variables the error is about (by the kind of error)."""
    text = str(exc)
    out = []
    if sources["name"] and ("unknown backend" in text or "not installed" in text):
        out.append(sources["name"])
    if sources["device"] and "device" in text:
        out.append(sources["device"])
    if sources["dtype"] and "dtype" in text:
        out.append(sources["dtype"])
    return out


def _make(name: str, device: Any, dtype: Any) -> Backend:
    selector = _SELECTORS.get(name)
    if selector is not None:
        if device is not None:  # it would be ignored: the selector picks the device
            raise BackendError(
                f"backend {name!r} chooses the device itself (it picks among every backend "
                f"and device), so device {device!r} would be ignored; name a backend with "
                f"that device (XPROP_BACKEND=torch XPROP_DEVICE=cuda:1), or leave the device "
                "unset"
            )
        return selector(dtype_label(dtype))
    lib, xp = _load(name)
    float_dtype = _float_dtype(xp, dtype, name)
    lib.prepare_dtype(_dtype_name(xp, float_dtype))
    dev = lib.default_device(xp) if device is None else lib.parse_device(xp, device)
    try:
        probe = xp.zeros(1, dtype=float_dtype, device=dev)
    except Exception as exc:  # the library says no: wrong device, or dtype not on it
        raise BackendError(
            f"backend {name!r} cannot create {_dtype_name(xp, float_dtype)} arrays on device "
            f"{dev!r} ({exc.__class__.__name__}: {exc}); choose another device "
            f"(XPROP_DEVICE) or dtype (XPROP_DTYPE=float32)"
        ) from exc
    if probe.dtype != float_dtype:
        raise BackendError(
            f"backend {name!r} made {probe.dtype} arrays when asked for "
            f"{_dtype_name(xp, float_dtype)}; choose another dtype (XPROP_DTYPE=float32)"
        )
    backend = Backend(name=name, xp=xp, device=dev, dtype=float_dtype, library=lib)
    if device is not None:  # asked for: its kernels run there too (CuPy's current device)
        backend.activate()
    return backend


# --------------------------------------------------------------------------------------
# Selectors: names that choose a backend rather than name a library
# --------------------------------------------------------------------------------------

# name -> the function that chooses: it takes the dtype name, returns the Backend.
_SELECTORS: dict[str, Callable[[str], Backend]] = {}


def register_selector(
    name: str, choose: Callable[[str], Backend], *, overwrite: bool = False
) -> None:
    """Make ``get_backend(name)`` (and ``XPROP_BACKEND=name``) return ``choose(dtype)``.

    A selector is a backend name that stands for a way of choosing one rather than for an
    array library: ``"auto"`` (:mod:`xprop.auto`) measures and returns the fastest backend.
    ``choose`` is called with the dtype asked for, as a name (``"float32"``), and returns
    a :class:`Backend`; a device asked for is not passed (the selector chooses it).  The
    module that defines a selector registers it, so that selection never imports what a
    selector needs (``"auto"`` builds networks).

    Raises
    ------
    BackendError
        ``name`` is not a non-empty string without surrounding spaces, ``choose`` is not
        callable, or the name is taken by an array library or (without ``overwrite``) by
        another selector.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BackendError(
            f"a selector's name must be a non-empty string without surrounding spaces, "
            f"got {name!r}"
        )
    if not callable(choose):
        raise BackendError(
            f"register_selector({name!r}, ...) needs a function of the dtype name that "
            f"returns a Backend, got {type(choose).__name__} {choose!r:.60}"
        )
    if name in known_backends():
        raise BackendError(
            f"{name!r} is the name of an array library's backend; choose another name for "
            "the selector"
        )
    if name in _SELECTORS and not overwrite and _SELECTORS[name] is not choose:
        raise BackendError(
            f"the backend name {name!r} is already a selector; pass overwrite=True to replace it"
        )
    _SELECTORS[name] = choose


def _current_defaults() -> dict[str, Any]:
    return _context_default.get() or _process_default


def set_backend(
    name: str | Backend | None = None, *, device: Any = None, dtype: Any = None
) -> Backend:
    """Change the process-wide default backend; ``set_backend(None)`` restores the env/default.

    The choice is validated at once (raises :class:`BackendError`) and returned.
    """
    with _default_lock:
        if name is None and device is None and dtype is None:
            _process_default.clear()
            return get_backend()
        if isinstance(name, Backend):
            backend = get_backend(name, device=device, dtype=dtype)
        else:
            # The process default is built from the arguments, the old process default,
            # the environment: never from the use_backend block this call may sit in.
            backend = _build(name, device, dtype, dict(_process_default))
        _process_default.clear()
        _process_default.update(name=backend.name, device=backend.device, dtype=backend.dtype_name)
        return backend


@contextlib.contextmanager
def use_backend(
    name: str | Backend | None = None, *, device: Any = None, dtype: Any = None
) -> Iterator[Backend]:
    """Select a backend inside a ``with`` block and yield it.

    The selection is a context variable: it holds for this thread and this asyncio task
    (tasks started inside the block inherit it), and other threads and tasks never see it.
    """
    backend = get_backend(name, device=device, dtype=dtype)
    token = _context_default.set(
        {"name": backend.name, "device": backend.device, "dtype": backend.dtype_name}
    )
    try:
        yield backend
    finally:
        _context_default.reset(token)


def available_backends() -> list[str]:
    """Names of the registered backends that import and have a usable device right now."""
    names = []
    for name in known_backends():
        try:
            _load(name)
        except BackendError:
            continue
        except Exception:  # a broken install must not break discovery of the others
            continue
        names.append(name)
    return names


# --------------------------------------------------------------------------------------
# Helpers for code that holds arrays but no Backend (the gradient checker)
# --------------------------------------------------------------------------------------


def to_numpy(x: Array) -> np.ndarray:
    """A NumPy copy of an array of any library, on the host."""
    import array_api_compat as compat

    return library_for(compat.array_namespace(x)).to_numpy(x)


def ensure_float64(xp: Namespace) -> None:
    """Let namespace ``xp`` create float64 arrays (JAX needs its x64 mode switched on)."""
    library_for(xp).prepare_dtype("float64")


def normal_like(x: Array, seed: int | None = None) -> Array:
    """Standard-normal samples (drawn on the host) of ``x``'s shape, library, device, dtype."""
    import array_api_compat as compat

    xp = compat.array_namespace(x)
    draw = np.random.default_rng(seed).standard_normal(tuple(x.shape))
    host = draw.astype(np.dtype(_dtype_name(xp, x.dtype)))
    return xp.asarray(host, device=compat.device(x))
