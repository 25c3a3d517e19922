"""JAX: arrays are immutable and work is queued per array; a training step compiles with jit."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from xprop.libraries._base import ArrayLibrary, BackendError
from xprop.typing import Array, Namespace

__all__ = ["JaxLibrary", "X64Warning"]


class X64Warning(UserWarning):
    """xprop switched JAX's process-wide 64-bit mode on (for float64 arrays)."""


class JaxLibrary(ArrayLibrary):
    """JAX through ``jax.numpy`` (itself an array-API namespace).

    float64 needs JAX's x64 mode, which :meth:`prepare_dtype` switches on; without it JAX has
    no 64-bit integers either.  Its training step is
    :class:`~xprop.training.jit.JitStep`.  JAX
    arrays are immutable: :meth:`unpack` returns new arrays, and MPI buffers always go
    through host memory (an MPI writing into a JAX buffer would break its immutability).
    """

    name = "jax"
    module = "jax"
    install_hint = "pip install 'xprop[jax]'"

    def load(self) -> Namespace:
        # JAX takes 75% of a GPU's memory when it first uses it: a second MPI rank on the
        # same node would then fail.  Launchers say how many ranks share the node (MPICH's
        # MPI_LOCALNRANKS, Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE); with more than one, JAX
        # allocates on demand (a user's explicit XLA_PYTHON_CLIENT_PREALLOCATE wins).
        local = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE")
        if local and local.isdigit() and int(local) > 1:
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax.numpy as jnp

        return jnp

    def version_info(self, xp: Namespace) -> dict[str, str]:
        import jax
        import jaxlib

        info = super().version_info(xp)
        info["jaxlib"] = jaxlib.__version__
        info["default platform"] = jax.default_backend()
        # The device kind names the GPU ("NVIDIA H100 80GB HBM3"); on the CPU it says "cpu".
        info["device kinds"] = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        # The platform's own version: "cuda 12080" on a GPU (on the CPU just "cpu")
        version = str(getattr(jax.devices()[0].client, "platform_version", "") or "")
        if version and version != info["default platform"]:
            info["platform version"] = version
        # x64 mode changes every default dtype of the process: results depend on it.
        info["x64 mode"] = "on" if jax.config.read("jax_enable_x64") else "off"
        return info

    def devices(self, xp: Namespace) -> list[Any]:
        import jax

        return list(jax.devices())

    def default_device(self, xp: Namespace) -> Any:
        import jax

        return jax.devices()[0]

    def parse_device(self, xp: Namespace, spec: Any) -> Any:
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

    def is_accelerator(self, device: Any) -> bool:
        return getattr(device, "platform", "cpu") != "cpu"

    def prepare_dtype(self, dtype: str) -> None:
        import jax

        # JAX silently truncates float64 to float32 unless x64 mode is on.  The mode is
        # process-wide (the user's own jnp.asarray(1.0) becomes float64 too): say so, once.
        if dtype == "float64" and not jax.config.read("jax_enable_x64"):
            jax.config.update("jax_enable_x64", True)
            warnings.warn(
                "xprop switched on JAX's 64-bit mode (jax_enable_x64) for float64 arrays; "
                "it holds for the whole process, so JAX's default dtypes are now float64 "
                "and int64 (set it yourself before importing xprop to silence this)",
                X64Warning,
                stacklevel=5,
            )

    def dtype_hint(self, dtype: str) -> str:
        if dtype in ("float64", "int64", "uint64"):
            return (
                "JAX's 64-bit mode is off; get_backend('jax', dtype='float64') switches it on "
                "(for the whole process), or jax.config.update('jax_enable_x64', True)"
            )
        return super().dtype_hint(dtype)

    def supports_dtype(self, dtype: str) -> bool:
        import jax

        return not dtype.endswith("64") or bool(jax.config.read("jax_enable_x64"))

    def from_host(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Any:
        import jax

        # A plain copy to the device: jnp.asarray(host, dtype=..., device=...) compiles a
        # small XLA program (convert_element_type, _identity_fn) per shape and dtype.
        return jax.device_put(host, device)

    def synchronize(self, device: Any, arrays: Sequence[Array] = ()) -> None:
        import jax

        # JAX has no device barrier: work is done when the arrays it produces are ready.
        jax.block_until_ready(list(arrays))

    def pack(
        self, arrays: Sequence[Array], out: Array | None = None, *, device: bool = False
    ) -> Array:
        # np.asarray of a JAX array on the CPU is a view; from a GPU, a copy to the host.
        return np.concatenate([np.asarray(a).reshape(-1) for a in arrays], out=out)

    def unpack(self, buffer: Array, arrays: Sequence[Array]) -> list[Array]:
        import jax
        import jax.numpy as jnp

        # A copy: the caller may reuse ``buffer``, and JAX on the CPU could alias it.
        src = jax.device_put(np.array(buffer, copy=True), next(iter(arrays[0].devices())))
        out, offset = [], 0
        for a in arrays:
            out.append(jnp.reshape(src[offset : offset + a.size], a.shape))
            offset += a.size
        return out

    def assign(self, target: Array, value: Array) -> Array:
        return value  # immutable: the caller rebinds

    def is_tracing(self, x: Array) -> bool:
        import jax

        return isinstance(x, jax.core.Tracer)

    def step_kind(self, device: Any) -> str:
        return "jax.jit"
