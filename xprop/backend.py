"""Backend selection: the one module of xprop that knows array libraries by name.

Compute code (layers, functions, gradients) never asks which library it runs on: it infers
the namespace from its inputs.  Only *creation* — weights, data, random numbers — needs to
know where arrays should live, and asks a :class:`Backend` for it.

A backend is chosen by name (argument, else ``XPROP_BACKEND``, else ``"numpy"``), with a
floating dtype (argument, else ``XPROP_DTYPE``, else ``float32``) and a device (argument,
else ``XPROP_DEVICE``, else the library's default: the current GPU for CuPy, CUDA for
PyTorch when it is available).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Backend",
    "BackendError",
    "HostRNG",
    "available_backends",
    "get_backend",
    "register_backend",
    "set_backend",
    "use_backend",
]

ENV_BACKEND = "XPROP_BACKEND"
ENV_DTYPE = "XPROP_DTYPE"
ENV_DEVICE = "XPROP_DEVICE"

_FLOAT_DTYPES = ("float32", "float64", "float16")


class BackendError(ValueError):
    """A backend, device or dtype that cannot be used; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# Library descriptions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Library:
    """How to load one array library and talk to its devices.

    ``load`` returns the array-API namespace (raising ``ImportError`` when the library is
    missing).  The optional hooks default to what the standard itself offers.
    """

    name: str
    load: Callable[[], Any]
    install_hint: str = ""
    check: Callable[[Any], None] | None = None
    parse_device: Callable[[Any, Any], Any] | None = None
    default_device: Callable[[Any], Any] | None = None
    to_numpy: Callable[[Any], np.ndarray] | None = None
    synchronize: Callable[[Any], None] | None = None
    prepare_dtype: Callable[[str], None] | None = None
    has_int64: Callable[[], bool] | None = None


def _numpy_load() -> Any:
    import array_api_compat.numpy as xp

    return xp


def _cupy_load() -> Any:
    import array_api_compat.cupy as xp

    return xp


def _cupy_check(xp: Any) -> None:
    import cupy

    # ``import cupy`` succeeds on machines with no GPU; only this tells the truth.
    if not cupy.is_available():
        raise BackendError(
            "backend 'cupy' is installed but no usable CUDA device was found "
            "(cupy.is_available() is False); run on a machine with an NVIDIA GPU and driver, "
            "or choose a CPU backend such as XPROP_BACKEND=numpy"
        )


def _cupy_parse_device(xp: Any, spec: Any) -> Any:
    import cupy

    if isinstance(spec, cupy.cuda.Device):
        return spec
    text = str(spec).lower().removeprefix("cuda").removeprefix("gpu").lstrip(":")
    try:
        return cupy.cuda.Device(int(text or 0))
    except ValueError:
        raise BackendError(
            f"device {spec!r} is not a CUDA device for backend 'cupy'; "
            "use a GPU index such as XPROP_DEVICE=0 or 'cuda:1'"
        ) from None


def _cupy_default_device(xp: Any) -> Any:
    import cupy

    return cupy.cuda.Device()


def _cupy_to_numpy(x: Any) -> np.ndarray:
    import cupy

    return cupy.asnumpy(x)


def _cupy_sync(device: Any) -> None:
    import cupy

    with cupy.cuda.Device(device.id):
        cupy.cuda.get_current_stream().synchronize()


def _torch_load() -> Any:
    import array_api_compat.torch as xp

    return xp


def _torch_parse_device(xp: Any, spec: Any) -> Any:
    import torch

    try:
        return torch.device(spec)
    except (RuntimeError, TypeError):
        raise BackendError(
            f"device {spec!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
        ) from None


def _torch_default_device(xp: Any) -> Any:
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _torch_to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy()


def _torch_sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _jax_load() -> Any:
    import jax.numpy as jnp

    return jnp


def _jax_prepare_dtype(dtype: str) -> None:
    import jax

    # JAX silently truncates float64 to float32 unless x64 mode is on.
    if dtype == "float64" and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)


def _jax_default_device(xp: Any) -> Any:
    import jax

    return jax.devices()[0]


def _jax_has_int64() -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def _jax_parse_device(xp: Any, spec: Any) -> Any:
    import jax

    if isinstance(spec, jax.Device):
        return spec
    platform, _, index = str(spec).partition(":")
    try:
        return jax.devices(platform or None)[int(index or 0)]
    except (RuntimeError, IndexError, ValueError):
        raise BackendError(
            f"device {spec!r} is not available to jax; it has {jax.devices()}; "
            "use 'cpu', 'gpu' or 'gpu:1'"
        ) from None


def _jax_sync(device: Any) -> None:
    # JAX has no device-wide barrier; effects_barrier waits for all dispatched work.
    import jax

    jax.effects_barrier()


def _strict_load() -> Any:
    import array_api_strict as xp

    return xp


def _parse_device_generic(xp: Any, spec: Any) -> Any:
    """Find ``spec`` (a device or its name) among the namespace's devices."""
    info = xp.__array_namespace_info__()
    devices = list(info.devices())
    for d in devices:
        if spec is d or spec == d:
            return d
    text = str(spec)
    for d in devices:
        if text in (str(d), repr(d)) or f"'{text}'" in repr(d):
            return d
    raise BackendError(
        f"device {spec!r} is not a device of this library; choose one of: "
        f"{', '.join(str(d) for d in devices)}"
    )


def _strict_to_numpy(x: Any) -> np.ndarray:
    import array_api_strict as xp

    # Only arrays on the CPU device expose the buffer protocol; move others there first.
    x = x.to_device(xp.Device("CPU_DEVICE"))
    return np.asarray(x)


_LIBRARIES: dict[str, _Library] = {}
_BUILTIN_ORDER = ("numpy", "cupy", "torch", "jax", "array_api_strict")


def _add_builtin(lib: _Library) -> None:
    _LIBRARIES[lib.name] = lib


_add_builtin(_Library("numpy", _numpy_load, install_hint="pip install xprop"))
_add_builtin(
    _Library(
        "cupy",
        _cupy_load,
        install_hint="pip install 'xprop[cuda12]' or 'xprop[cuda13]' (matching your CUDA)",
        check=_cupy_check,
        parse_device=_cupy_parse_device,
        default_device=_cupy_default_device,
        to_numpy=_cupy_to_numpy,
        synchronize=_cupy_sync,
    )
)
_add_builtin(
    _Library(
        "torch",
        _torch_load,
        install_hint="pip install 'xprop[torch]'",
        parse_device=_torch_parse_device,
        default_device=_torch_default_device,
        to_numpy=_torch_to_numpy,
        synchronize=_torch_sync,
    )
)
_add_builtin(
    _Library(
        "jax",
        _jax_load,
        install_hint="pip install 'xprop[jax]'",
        parse_device=_jax_parse_device,
        default_device=_jax_default_device,
        synchronize=_jax_sync,
        has_int64=_jax_has_int64,
        prepare_dtype=_jax_prepare_dtype,
    )
)
_add_builtin(
    _Library(
        "array_api_strict",
        _strict_load,
        install_hint="pip install 'xprop[strict]'",
        to_numpy=_strict_to_numpy,
    )
)


def register_backend(
    name: str,
    factory: Callable[[], Any],
    *,
    to_numpy: Callable[[Any], np.ndarray] | None = None,
    parse_device: Callable[[Any], Any] | None = None,
    synchronize: Callable[[Any], None] | None = None,
    install_hint: str = "",
    overwrite: bool = False,
) -> None:
    """Make a new array library selectable by ``name`` without editing xprop.

    ``factory()`` imports the library and returns its array-API namespace (for instance
    ``lambda: importlib.import_module("dpnp")``); it should raise ``ImportError`` when the
    library is missing.  Devices default to the namespace's
    ``__array_namespace_info__().default_device()``.  ``to_numpy(x)`` copies an array to the
    host (default ``numpy.asarray``); ``parse_device(spec)`` turns an ``XPROP_DEVICE`` string
    into a device; ``synchronize(device)`` waits for queued work (used by benchmarks).

    Raises :class:`BackendError` if ``name`` is taken and ``overwrite`` is false.
    """
    if not name or not isinstance(name, str):
        raise BackendError(f"backend name must be a non-empty string, got {name!r}")
    if name in _LIBRARIES and not overwrite:
        raise BackendError(
            f"backend {name!r} is already registered; pass overwrite=True to replace it"
        )
    _LIBRARIES[name] = _Library(
        name,
        factory,
        install_hint=install_hint,
        parse_device=(lambda xp, spec: parse_device(spec)) if parse_device else None,
        to_numpy=to_numpy,
        synchronize=synchronize,
    )


def known_backends() -> list[str]:
    """Names of every registered backend, built-ins first."""
    return list(_LIBRARIES)


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
    xp : module
        The array-API namespace (from ``array_api_compat`` where the library needs it).
    device : object
        The library's device object; every array this backend creates lives there.
    dtype : dtype
        The floating dtype of created float data and weights (``xp.float32`` by default).
    """

    name: str
    xp: Any = field(repr=False)
    device: Any
    dtype: Any
    _lib: _Library = field(repr=False, compare=False)

    # -- creation ---------------------------------------------------------------------

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """Copy host data (NumPy array, list, scalar) to this backend's device.

        Integer and boolean data keep their dtype; floating data gets :attr:`dtype` unless
        ``dtype`` (a dtype of this backend or a name such as ``"float64"``) is given.  The
        conversion happens on the host, so every backend receives bit-identical values.
        Arrays that already belong to this backend are moved to its device and cast.
        """
        if (
            dtype is None
            and isinstance(obj, np.ndarray)
            and obj.dtype.kind in "iub"
            and self._lib.has_int64 is None
        ):
            # Integer data (minibatch indices, labels) keep their dtype: nothing to convert.
            # This is the per-step path of a training loop, so it skips the general one.
            return self.xp.asarray(obj, device=self.device)
        target = None if dtype is None else _resolve_dtype(self.xp, dtype, self.name)
        if _is_host(obj):
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
                    narrow = self._lib.has_int64 is not None and not self._lib.has_int64()
                    if narrow and host.dtype.itemsize == 8:
                        host = host.astype(host.dtype.str[:-1] + "4")
                    target = _host_to_xp_dtype(self.xp, host.dtype)
            host = np.asarray(host, dtype=_xp_to_host_dtype(self.xp, target), order="C")
            return self.xp.asarray(host, dtype=target, device=self.device)
        out = self.xp.asarray(obj, device=self.device)
        if target is not None and out.dtype != target:
            out = self.xp.astype(out, target)
        return out

    def zeros(self, shape: int | Sequence[int], dtype: Any = None) -> Any:
        """``xp.zeros`` on this backend's device, in :attr:`dtype` unless told otherwise."""
        target = self.dtype if dtype is None else _resolve_dtype(self.xp, dtype, self.name)
        return self.xp.zeros(shape, dtype=target, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy an array of this backend to a NumPy array on the host (waits for the device)."""
        if self._lib.to_numpy is not None:
            return self._lib.to_numpy(x)
        return to_host(x)

    def rng(self, seed: int | None = None) -> HostRNG:
        """A random generator that draws on the host and returns arrays of this backend.

        The standard has no random module, so numbers come from
        ``numpy.random.default_rng(seed)``: one seed gives identical numbers on every backend.
        """
        return HostRNG(self, seed)

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work (for honest timing)."""
        if self._lib.synchronize is not None:
            self._lib.synchronize(self.device)

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

    def normal(self, shape: int | Sequence[int], scale: float = 1.0, dtype: Any = None) -> Any:
        """Normal samples with mean 0 and standard deviation ``scale``, in the float dtype."""
        draw = self.generator.standard_normal(shape) * scale
        return self.backend.asarray(draw, dtype=dtype)

    def uniform(
        self, shape: int | Sequence[int], low: float = 0.0, high: float = 1.0, dtype: Any = None
    ) -> Any:
        """Uniform samples on ``[low, high)``, in the float dtype."""
        return self.backend.asarray(self.generator.uniform(low, high, shape), dtype=dtype)

    def choice(self, n: int, size: int | Sequence[int], replace: bool = True) -> Any:
        """Integer indices in ``[0, n)`` (int64 array on the device), like ``np.random.choice``."""
        return self.backend.asarray(self.choice_host(n, size, replace))

    def choice_host(self, n: int, size: int | Sequence[int], replace: bool = True) -> np.ndarray:
        """The same draw as :meth:`choice`, kept on the host as a NumPy int64 array."""
        if replace:  # the same stream as Generator.choice, at a third of its cost
            return self.generator.integers(0, n, size, dtype=np.int64)
        return self.generator.choice(n, size, replace=False).astype(np.int64, copy=False)

    def permutation(self, n: int) -> Any:
        """A random permutation of ``range(n)`` (int64 array on the device)."""
        return self.backend.asarray(self.generator.permutation(n).astype(np.int64))


# --------------------------------------------------------------------------------------
# dtype and device helpers
# --------------------------------------------------------------------------------------


def _is_host(obj: Any) -> bool:
    return isinstance(obj, (np.ndarray, np.generic, list, tuple, int, float, bool))


def _dtype_name(xp: Any, dtype: Any) -> str:
    for name in (
        "float16",
        "float32",
        "float64",
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    ):
        candidate = getattr(xp, name, None)
        if candidate is not None and dtype == candidate:
            return name
    return str(dtype)


def _host_to_xp_dtype(xp: Any, host: np.dtype) -> Any:
    name = "bool" if host.kind == "b" else host.name
    return getattr(xp, name)


def _xp_to_host_dtype(xp: Any, dtype: Any) -> np.dtype:
    return np.dtype(_dtype_name(xp, dtype))


def _dtype_label(xp: Any, dtype: Any) -> str:
    """The plain name (``"float64"``) of a dtype given as a string or any library's dtype."""
    if isinstance(dtype, str):
        name = dtype.strip().lower()
    elif isinstance(dtype, np.dtype) or (
        isinstance(dtype, type) and issubclass(dtype, np.generic)
    ):
        name = np.dtype(dtype).name  # NumPy's spelling, whatever the backend
    else:
        name = _dtype_name(xp, dtype)  # a dtype object of this (or another) library
    return name.removeprefix("torch.").removeprefix("numpy.")


def _resolve_dtype(xp: Any, dtype: Any, backend_name: str) -> Any:
    """A dtype of ``xp`` from a name (``"float64"``), a dtype of ``xp`` or a NumPy dtype."""
    name = _dtype_label(xp, dtype)
    resolved = getattr(xp, name, None) if name.isidentifier() else None
    if resolved is None:
        raise BackendError(
            f"unknown dtype {dtype!r} for backend {backend_name!r}; "
            f"use one of: {', '.join(_FLOAT_DTYPES)} (or an integer dtype for labels)"
        )
    return resolved


def _float_dtype(xp: Any, dtype: Any, backend_name: str) -> Any:
    resolved = _resolve_dtype(xp, dtype, backend_name)
    if _dtype_name(xp, resolved) not in _FLOAT_DTYPES:
        raise BackendError(
            f"dtype {dtype!r} is not a floating dtype; a backend's dtype must be one of "
            f"{', '.join(_FLOAT_DTYPES)} (set XPROP_DTYPE or pass dtype=...)"
        )
    return resolved


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------

_state = threading.local()
_default_lock = threading.Lock()
_process_default: dict[str, Any] = {}


def _load(name: str) -> tuple[_Library, Any]:
    try:
        lib = _LIBRARIES[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; choose one of: {', '.join(_LIBRARIES)} "
            "(or add your own with xprop.register_backend)"
        ) from None
    try:
        xp = lib.load()
    except ImportError as exc:
        hint = f"; install it with: {lib.install_hint}" if lib.install_hint else ""
        raise BackendError(
            f"backend {name!r} is not installed ({exc.__class__.__name__}: {exc}){hint}"
        ) from exc
    if lib.check is not None:
        lib.check(xp)
    return lib, xp


def get_backend(
    name: str | Backend | None = None, *, device: Any = None, dtype: Any = None
) -> Backend:
    """Build the :class:`Backend` to create arrays with.

    Parameters
    ----------
    name : str or Backend, optional
        A registered backend name; default: the one set by :func:`set_backend` /
        :func:`use_backend`, else ``$XPROP_BACKEND``, else ``"numpy"``.  A ``Backend`` is
        returned as is (with ``device``/``dtype`` applied if given).
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
    defaults = _current_defaults()
    if name is None:
        name = defaults.get("name") or os.environ.get(ENV_BACKEND) or "numpy"
    name = name.strip()
    if device is None:
        # A default device belongs to the default library; another library has its own.
        if defaults.get("name") == name:
            device = defaults.get("device")
        elif defaults.get("name") is None and os.environ.get(ENV_BACKEND, name).strip() == name:
            device = os.environ.get(ENV_DEVICE) or None
    if dtype is None:
        dtype = defaults.get("dtype") or os.environ.get(ENV_DTYPE) or "float32"

    lib, xp = _load(name)
    if lib.prepare_dtype is not None:
        lib.prepare_dtype(_dtype_label(xp, dtype))
    float_dtype = _float_dtype(xp, dtype, name)

    if device is None:
        if lib.default_device is not None:
            dev = lib.default_device(xp)
        else:
            dev = xp.__array_namespace_info__().default_device()
    elif lib.parse_device is not None:
        dev = lib.parse_device(xp, device)
    else:
        dev = _parse_device_generic(xp, device)

    try:
        xp.zeros(1, dtype=float_dtype, device=dev)
    except Exception as exc:  # the library says no: wrong device, or dtype not on it
        raise BackendError(
            f"backend {name!r} cannot create {_dtype_name(xp, float_dtype)} arrays on device "
            f"{dev!r} ({exc.__class__.__name__}: {exc}); choose another device "
            f"(XPROP_DEVICE) or dtype (XPROP_DTYPE=float32)"
        ) from exc
    return Backend(name=name, xp=xp, device=dev, dtype=float_dtype, _lib=lib)


def _current_defaults() -> dict[str, Any]:
    stack = getattr(_state, "stack", None)
    if stack:
        return stack[-1]
    return _process_default


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
        backend = get_backend(name, device=device, dtype=dtype)
        _process_default.clear()
        _process_default.update(name=backend.name, device=backend.device, dtype=backend.dtype_name)
        return backend


@contextlib.contextmanager
def use_backend(
    name: str | Backend | None = None, *, device: Any = None, dtype: Any = None
) -> Iterator[Backend]:
    """Select a backend inside a ``with`` block (this thread only) and yield it."""
    backend = get_backend(name, device=device, dtype=dtype)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append({"name": backend.name, "device": backend.device, "dtype": backend.dtype_name})
    try:
        yield backend
    finally:
        stack.pop()


def available_backends() -> list[str]:
    """Names of the registered backends that import and have a usable device right now."""
    names = []
    for name in _LIBRARIES:
        try:
            _load(name)
        except BackendError:
            continue
        except Exception:  # a broken install must not break discovery of the others
            continue
        names.append(name)
    return names


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered backend (installed or not)."""
    return name in _LIBRARIES


# --------------------------------------------------------------------------------------
# Helpers for code that holds arrays but no Backend (the gradient checker)
# --------------------------------------------------------------------------------------


def to_host(x: Any) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host."""
    import array_api_compat as compat

    if compat.is_numpy_array(x):
        return x
    if compat.is_torch_array(x):
        return _torch_to_numpy(x)
    if compat.is_cupy_array(x):
        return _cupy_to_numpy(x)
    if compat.is_array_api_strict_namespace(compat.array_namespace(x)):
        return _strict_to_numpy(x)
    return np.asarray(x)


def ensure_float64(xp: Any) -> None:
    """Let namespace ``xp`` create float64 arrays (JAX needs its x64 mode switched on)."""
    import array_api_compat as compat

    if compat.is_jax_namespace(xp):
        _jax_prepare_dtype("float64")


def normal_like(x: Any, seed: int | None = None, shape: Sequence[int] | None = None) -> Any:
    """Standard-normal samples (drawn on the host) as an array of ``x``'s library and device.

    The shape is ``x``'s unless ``shape`` is given; the dtype is ``x``'s floating dtype.
    """
    import array_api_compat as compat

    xp = compat.array_namespace(x)
    draw = np.random.default_rng(seed).standard_normal(tuple(x.shape if shape is None else shape))
    host = draw.astype(np.dtype(_dtype_name(xp, x.dtype)))
    return xp.asarray(host, device=compat.device(x))
