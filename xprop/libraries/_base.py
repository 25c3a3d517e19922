"""The base class of xprop's array libraries: every hook, with the array API standard's answer.

One :class:`ArrayLibrary` subclass per array library (``numpy``, ``cupy``, ``torch``, ``jax``,
``array_api_strict``) holds everything xprop knows about that library: how to import it, its
devices, how to copy an array to the host, how to wait for its device, whether an array is
being traced, which training step fits it, what a bug report should say about it, and
how to lay arrays out in one flat buffer for MPI (:mod:`xprop.distributed`).  Layers and
functions never see these classes; they infer their namespace from their inputs.  A
compliant library needs only :attr:`~ArrayLibrary.name`, :attr:`~ArrayLibrary.module` and
:meth:`~ArrayLibrary.load`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from xprop.typing import Array, Namespace

__all__ = ["ArrayLibrary", "BackendError"]


class BackendError(ValueError):
    """A backend, device or dtype that cannot be used; the message says why and what to do."""


class ArrayLibrary:
    """How xprop talks to one array library; subclass it to add a library.

    Every method has a default built from the array API standard, so a compliant library
    needs only three lines::

        class Dpnp(xprop.ArrayLibrary):
            name = "dpnp"
            module = "dpnp"

            def load(self):
                return importlib.import_module("dpnp")

        xprop.register_backend(Dpnp)

    Override a method where the library needs help (a device spelling, a faster copy to
    the host, a device barrier, a compiler).  One instance per library is made at
    registration; :meth:`namespace` caches what :meth:`load` returns.
    """

    #: The name that selects the library (argument, ``set_backend``, ``XPROP_BACKEND``).
    name: ClassVar[str] = ""
    #: The top-level module its arrays come from (``"jax"`` for ``jax.numpy``); used to
    #: recognise a namespace as this library's without importing anything.
    module: ClassVar[str] = ""
    #: What to run when the library is missing; shown in the :class:`BackendError`.
    install_hint: ClassVar[str] = ""
    #: Whether :meth:`pack` can leave its buffer on an accelerator for a CUDA-aware MPI to
    #: read there (CuPy, PyTorch); otherwise buffers are staged through host memory.
    device_buffers: ClassVar[bool] = False

    def __init__(self) -> None:
        self._xp: Any = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- loading ----------------------------------------------------------------------

    def load(self) -> Namespace:
        """Import the library and return its array-API namespace.

        Raises ``ImportError`` when the library is not installed.
        """
        raise NotImplementedError(f"{type(self).__name__} must define load()")

    def install_command(self) -> str:
        """What to run to install the library here (:attr:`install_hint`, which a library
        may fit to the machine): shown when it is missing."""
        return self.install_hint

    def namespace(self) -> Namespace:
        """The namespace :meth:`load` returns, imported once."""
        if self._xp is None:
            self._xp = self.load()
        return self._xp

    def check(self, xp: Namespace) -> None:
        """Raise :class:`BackendError` when the library imports but cannot run here."""

    def version_info(self, xp: Namespace) -> dict[str, str]:
        """What a bug report needs to know about this installation of the library.

        Called by :func:`xprop.show_versions` once :meth:`load` has returned ``xp``, and
        before it asks for :meth:`devices`.  Returns ``{"version": ...}`` plus what the
        library knows beyond the standard: its build (the CUDA runtime it was built
        against), its GPUs by name, the driver, a mode that changes results (JAX's 64-bit
        mode).  Keys are short lower-case phrases; values are one line each.  The default
        gives the ``__version__`` of :attr:`module` (else of ``xp``).  It may raise:
        :func:`xprop.show_versions` reports the error in its place.
        """
        module = sys.modules.get(self.module) if self.module else None
        version = getattr(module, "__version__", None) or getattr(xp, "__version__", None)
        return {"version": "unknown" if version is None else str(version)}

    def owns(self, xp: Namespace) -> bool:
        """Whether namespace ``xp`` is this library's (never imports the library)."""
        if self.module and self.module not in sys.modules:
            return False
        try:
            return xp is self.namespace()
        except ImportError:
            return False

    # -- devices and dtypes -----------------------------------------------------------

    def devices(self, xp: Namespace) -> list[Any]:
        """Every device the library can use here."""
        return list(xp.__array_namespace_info__().devices())

    def default_device(self, xp: Namespace) -> Any:
        """The device arrays go to when none is named."""
        return xp.__array_namespace_info__().default_device()

    def parse_device(self, xp: Namespace, spec: Any) -> Any:
        """The device that ``spec`` (a device, or its name such as ``"device1"``) means.

        Raises :class:`BackendError`, listing the devices, when there is none such.
        """
        devices = self.devices(xp)
        for d in devices:
            if spec is d or spec == d:
                return d
        text = str(spec)
        for d in devices:
            if text in (str(d), repr(d)) or f"'{text}'" in repr(d):
                return d
        raise BackendError(
            f"device {spec!r} is not a device of {self.name}; choose one of: "
            f"{', '.join(str(d) for d in devices)}"
        )

    def activate(self, device: Any) -> None:
        """Make ``device`` the one this library's kernels run on, in the calling thread.

        Most libraries run an operation where its arrays are (the default: nothing to
        do); CuPy runs every kernel on its *current* device, so a backend on GPU 1 makes
        GPU 1 current (:meth:`xprop.Backend.activate`, called when a backend is made for a
        device asked for, and when a ``Trainer`` trains).
        """

    def is_accelerator(self, device: Any) -> bool:
        """Whether ``device`` is a GPU-like accelerator (launch-bound for small work)."""
        text = str(device).lower()
        return any(word in text for word in ("cuda", "gpu", "rocm", "mps", "tpu"))

    def prepare_dtype(self, dtype: str) -> None:
        """Make the library ready to create arrays of ``dtype`` (a name such as ``"float64"``)."""

    def supports_dtype(self, dtype: str) -> bool:
        """Whether the library can make arrays of ``dtype`` (a name) right now."""
        return True

    def dtype_hint(self, dtype: str) -> str:
        """What to do when arrays of ``dtype`` cannot be made (the end of an error message)."""
        return "use a backend of another dtype or another library"

    # -- host transfer and timing -----------------------------------------------------

    def from_host(self, xp: Namespace, host: np.ndarray, dtype: Any, device: Any) -> Array:
        """An array of this library on ``device`` holding ``host`` (a NumPy array already
        in ``dtype``, the dtype's counterpart here): the copy :meth:`xprop.Backend.asarray`
        makes.  The default is the standard's ``asarray``."""
        return xp.asarray(host, dtype=dtype, device=device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """A NumPy copy of ``x`` on the host (waits for the device); never a view of ``x``."""
        return np.array(x, copy=True)

    def synchronize(self, device: Any, arrays: Sequence[Array] = ()) -> None:
        """Wait until ``device`` has finished its queued work, ``arrays`` included.

        Libraries that queue work per array rather than per device (JAX) wait for
        ``arrays``: timings must pass the arrays they time.
        """

    # -- in-place updates -------------------------------------------------------------------

    def cannot_write(self, x: Array) -> str | None:
        """Why ``x`` cannot be updated in place (``x -= step``), or ``None`` when it can.

        Asked for every parameter before an optimizer writes the first one, so that an
        update fails whole or not at all; read from attributes, never from the data.
        Libraries whose arrays are immutable (JAX) answer ``None``: their updates rebind.
        """
        return None

    def assign(self, target: Array, value: Array) -> Array:
        """``target`` holding ``value`` (same shape and dtype): written in place
        (``target[...] = value``, the standard's ``__setitem__``), and returned.  Libraries
        whose arrays are immutable (JAX) return ``value``, which the caller binds in
        ``target``'s place."""
        target[...] = value
        return target

    # -- tracing and compilation --------------------------------------------------------

    def is_tracing(self, x: Array) -> bool:
        """Whether ``x`` is a placeholder of a trace or a capture rather than a real array.

        Caches must not keep arrays made while this is true: they belong to one trace.
        """
        return False

    def step_kind(self, device: Any) -> str:
        """Which training step fits networks whose arrays are on ``device``.

        ``net.compile_step(optimizer)`` builds the step of that kind
        (:func:`xprop.training.compile.compile_step`): ``"eager"`` (the default, the step
        as it is), ``"jax.jit"`` or ``"torch CUDA graph"``.  Only the kind is said here;
        the steps themselves live in :mod:`xprop.training`.
        """
        return "eager"

    # -- flat buffers for MPI (xprop.distributed) -----------------------------------------

    def pack(
        self, arrays: Sequence[Array], out: Array | None = None, *, device: bool = False
    ) -> Array:
        """Every element of ``arrays`` (one dtype), one array after the other, in one buffer.

        The buffer is what one MPI call reads and writes: a C-contiguous 1-d NumPy array on
        the host; or, with ``device=True`` where :attr:`device_buffers` allows it, a 1-d
        array of this library on the arrays' accelerator, ready for a CUDA-aware MPI to read
        (the device's queued work has finished).  ``out``, a buffer an earlier call returned
        for arrays of the same sizes and dtype, is filled instead of a new one.  Libraries
        on the CPU return a host buffer whatever ``device`` says: it is their device.
        """
        total = sum(_size(a) for a in arrays)
        host = None
        offset = 0
        for a in arrays:
            part = self.to_numpy(a).reshape(-1)
            if host is None:
                host = np.empty(total, dtype=part.dtype) if out is None else out
            host[offset : offset + part.size] = part
            offset += part.size
        return np.empty(0) if host is None else host

    def unpack(self, buffer: Array, arrays: Sequence[Array]) -> list[Array]:
        """The values :meth:`pack` laid out in ``buffer``, as arrays like ``arrays``.

        In place where the library's arrays are mutable: the same array objects come back,
        now holding the buffer's values.  Where arrays are immutable (JAX) new arrays come
        back, on the same device, and ``arrays`` are left alone.  ``buffer`` may be reused
        afterwards: nothing returned shares its memory.
        """
        from array_api_compat import array_namespace
        from array_api_compat import device as device_of

        xp = array_namespace(*arrays)
        offset = 0
        for a in arrays:
            n = _size(a)
            part = np.ascontiguousarray(buffer[offset : offset + n]).reshape(tuple(a.shape))
            a[...] = xp.asarray(part, device=device_of(a))
            offset += n
        return list(arrays)


def _size(x: Array) -> int:
    """Number of elements of an array (``x.size`` is ``None`` for unknown sizes)."""
    n = 1
    for d in x.shape:
        n *= int(d)
    return n
