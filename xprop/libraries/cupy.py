"""CuPy on NVIDIA GPUs (CUDA 12 or 13)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from xprop.libraries._base import ArrayLibrary, BackendError
from xprop.typing import Array, Namespace

__all__ = ["CuPyLibrary"]


class CuPyLibrary(ArrayLibrary):
    """CuPy: devices are GPU indices; the step is eager and never waits for the device.

    A CuPy step cannot be captured as a CUDA graph: CuPy refuses cuBLAS calls during
    stream capture (cupy/cupy#6290), and every step has matrix products.  A CUDA-aware MPI
    reads CuPy buffers on the GPU (``__cuda_array_interface__``); any other MPI gets them
    staged through host memory.

    Loading it also makes array-api-compat's CuPy namespace honour ``device=`` in its
    creation functions (:func:`honour_device`): as released, ``zeros``, ``ones``, ``arange``,
    ``full``, ``empty`` and the ``*_like`` functions ignore it and create on the current
    device, so a backend on GPU 1 would get its biases and constants on GPU 0.  CuPy runs
    every kernel on its current device, though, whatever device its inputs are on
    (reading another GPU's memory over peer access, with a ``PerformanceWarning``), so
    :meth:`activate` makes the backend's device current (``cupy.cuda.Device(i).use()``, per
    thread) when a backend is made for a device asked for (``XPROP_DEVICE``, ``device=``,
    an MPI rank's placement) and when a ``Trainer`` trains.
    """

    name = "cupy"
    module = "cupy"
    install_hint = "pip install 'xprop[cuda12]' or 'xprop[cuda13]' (matching your CUDA)"
    device_buffers = True

    def load(self) -> Namespace:
        import array_api_compat.cupy as xp
        import cupy

        honour_device(xp, cupy.cuda.Device)
        return xp

    def check(self, xp: Namespace) -> None:
        import cupy

        # ``import cupy`` succeeds on machines with no GPU; only this tells the truth.
        if not cupy.is_available():
            raise BackendError(
                "backend 'cupy' is installed but no usable CUDA device was found "
                "(cupy.is_available() is False); run on a machine with an NVIDIA GPU and "
                "driver, or choose a CPU backend such as XPROP_BACKEND=numpy"
            )

    def version_info(self, xp: Namespace) -> dict[str, str]:
        import cupy

        info = super().version_info(xp)
        runtime = cupy.cuda.runtime
        # Each query on its own: a machine without a driver still has a runtime to report.
        for key, query in (
            ("cuda runtime", runtime.runtimeGetVersion),
            ("cuda driver", runtime.driverGetVersion),
        ):
            try:
                info[key] = _cuda_version(query())
            except Exception as exc:  # CUDARuntimeError without a driver or device
                info[key] = f"unknown ({type(exc).__name__}: {exc})"
        try:
            names = [
                runtime.getDeviceProperties(i)["name"].decode()
                for i in range(runtime.getDeviceCount())
            ]
            info["gpus"] = ", ".join(f"{i} {n}" for i, n in enumerate(names)) or "none"
        except Exception as exc:
            info["gpus"] = f"none usable ({type(exc).__name__}: {exc})"
        return info

    def devices(self, xp: Namespace) -> list[Any]:
        import cupy

        return [cupy.cuda.Device(i) for i in range(cupy.cuda.runtime.getDeviceCount())]

    def default_device(self, xp: Namespace) -> Any:
        import cupy

        return cupy.cuda.Device()

    def parse_device(self, xp: Namespace, spec: Any) -> Any:
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

    def activate(self, device: Any) -> None:
        import cupy

        cupy.cuda.Device(device.id).use()  # kernels run on the current device

    def is_accelerator(self, device: Any) -> bool:
        return True

    def to_numpy(self, x: Array) -> np.ndarray:
        import cupy

        host: np.ndarray = cupy.asnumpy(x)
        return host

    def synchronize(self, device: Any, arrays: Sequence[Array] = ()) -> None:
        import cupy

        with cupy.cuda.Device(device.id):
            cupy.cuda.get_current_stream().synchronize()

    def pack(
        self, arrays: Sequence[Array], out: Array | None = None, *, device: bool = False
    ) -> Array:
        import cupy

        with cupy.cuda.Device(arrays[0].device.id):
            flat = [a.reshape(-1) for a in arrays]
            if device:
                packed = cupy.concatenate(flat, out=out)
                # MPI reads the memory itself, outside CuPy's stream: finish the copy first.
                cupy.cuda.get_current_stream().synchronize()
                return packed
            return cupy.asnumpy(cupy.concatenate(flat), out=out)  # waits for the device

    def unpack(self, buffer: Array, arrays: Sequence[Array]) -> list[Array]:
        import cupy

        with cupy.cuda.Device(arrays[0].device.id):
            src = cupy.asarray(buffer)  # a host buffer: one copy to the GPU
            offset = 0
            for a in arrays:
                a[...] = src[offset : offset + a.size].reshape(a.shape)
                offset += a.size
        return list(arrays)


#: The creation functions of the standard that take ``device=``; array-api-compat 1.16's
#: CuPy versions accept it and ignore it (``common._aliases``: "CuPy multi-device support
#: is currently impossible without using the global device or a context manager").
_CREATION = ("arange", "empty", "eye", "full", "linspace", "ones", "zeros")
#: Those whose device defaults to their argument's, where CuPy uses the current device.
_CREATION_LIKE = ("empty_like", "full_like", "ones_like", "zeros_like")


def honour_device(xp: ModuleType, device_type: type) -> None:
    """Make the creation functions of namespace ``xp`` create arrays on their ``device=``.

    ``xp`` is array-api-compat's CuPy namespace, the module object itself: compute code
    gets it from ``array_api_compat.array_namespace(x)``, so a patched copy would not be
    seen there.  Each function is replaced, once (it is idempotent), by one that runs the
    original inside ``with device_type(device.id)`` (``cupy.cuda.Device``) when ``device``
    is given, and for the ``*_like`` functions when it is not, on their argument's device,
    as the array API standard says.  Without ``device`` the others create on the current
    device, as before.  Nothing changes where the device is the current one already; the
    rest of the process gets what the standard promises, which nothing can rely on not
    getting.
    """
    for name in _CREATION + _CREATION_LIKE:
        create = getattr(xp, name, None)
        if create is None or getattr(create, "_xprop_enters_device", False):
            continue
        setattr(xp, name, _entering_device(create, device_type, like=name in _CREATION_LIKE))


def _entering_device(
    create: Callable[..., Any], device_type: type, *, like: bool
) -> Callable[..., Any]:
    @functools.wraps(create)
    def on_device(*args: Any, device: Any = None, **kwargs: Any) -> Any:
        if device is None and like and args:
            found = getattr(args[0], "device", None)  # a CuPy array's; not NumPy's "cpu"
            device = found if isinstance(found, device_type) else None
        if device is None:
            return create(*args, **kwargs)
        with device_type(getattr(device, "id", device)):
            return create(*args, device=device, **kwargs)

    # A marker attribute on the function (type checkers know no attributes of functions).
    on_device._xprop_enters_device = True  # type: ignore[attr-defined]
    return on_device


def _cuda_version(code: int) -> str:
    """CUDA's version code as text: 12080 -> ``"12.8"``; 0 (no driver) -> ``"none"``."""
    if code == 0:
        return "none"
    return f"{code // 1000}.{code % 1000 // 10}"
