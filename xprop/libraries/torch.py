"""PyTorch: CUDA when available (a training step replayed as a CUDA graph), else the CPU."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from xprop.libraries._base import ArrayLibrary, BackendError
from xprop.typing import Array, Namespace

__all__ = ["TorchLibrary"]


class TorchLibrary(ArrayLibrary):
    """PyTorch through ``array_api_compat.torch``.

    Devices are normalised to carry an index (``cuda`` means ``cuda:<current>``), because
    tensors report ``cuda:0`` and ``torch.device("cuda") != torch.device("cuda:0")``.
    On CUDA the training step is captured as a CUDA graph
    (:class:`~xprop.training.cuda_graph.CudaGraphStep`); on the CPU it is eager.
    MPI reads CPU tensors through a NumPy view of their memory, and CUDA tensors where they
    lie when the MPI is CUDA-aware.
    """

    name = "torch"
    module = "torch"
    install_hint = "pip install 'xprop[torch]'"
    device_buffers = True

    def install_command(self) -> str:
        # A plain `pip install torch` on Linux pulls the CUDA build (several GB of nvidia-*
        # wheels): a machine without an NVIDIA GPU gets the CPU build's command.
        if has_nvidia_gpu():
            return self.install_hint
        return (
            "pip install torch --index-url https://download.pytorch.org/whl/cpu && "
            "pip install 'xprop[torch]' (the CPU build: this machine has no NVIDIA GPU)"
        )

    def load(self) -> Namespace:
        import array_api_compat.torch as xp

        return xp

    def version_info(self, xp: Namespace) -> dict[str, str]:
        import torch

        info = super().version_info(xp)
        # The CUDA runtime is part of the wheel: this is the version torch was built with.
        info["cuda runtime"] = torch.version.cuda or "none (a CPU build)"
        if torch.version.hip:
            info["rocm (hip)"] = torch.version.hip
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["gpus"] = ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
            info["cudnn"] = str(torch.backends.cudnn.version())
        elif torch.version.cuda:
            info["gpus"] = "none usable (torch.cuda.is_available() is False)"
        info["mps"] = "available" if torch.backends.mps.is_available() else "no"
        info["cpu threads"] = str(torch.get_num_threads())
        return info

    def devices(self, xp: Namespace) -> list[Any]:
        import torch

        out = [torch.device("cpu")]
        if torch.cuda.is_available():
            out += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            out.append(torch.device("mps", 0))
        return out

    def default_device(self, xp: Namespace) -> Any:
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def parse_device(self, xp: Namespace, spec: Any) -> Any:
        import torch

        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError):
            raise BackendError(
                f"device {spec!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from None
        if device.type == "meta":
            # Meta tensors hold shapes but no values: every read (loss.item()) fails later.
            raise BackendError(
                f"device {spec!r} is torch's meta device, whose tensors hold no values (xprop "
                "reads losses and accuracies); use 'cpu', 'cuda', 'cuda:1' or 'mps'"
            )
        if device.index is None and device.type == "cuda":
            index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            device = torch.device("cuda", index)
        elif device.index is None and device.type == "mps":
            device = torch.device("mps", 0)
        return device

    def is_accelerator(self, device: Any) -> bool:
        return getattr(device, "type", "cpu") != "cpu"

    def cannot_write(self, x: Array) -> str | None:
        import torch

        if x.requires_grad and torch.is_grad_enabled():
            # A leaf refuses in-place updates; any other would grow autograd's graph every
            # step.  xprop computes the gradients itself.
            return (
                "it requires grad (requires_grad=True), and autograd refuses in-place "
                "updates of such tensors; xprop computes gradients itself: make it with "
                "requires_grad=False or call x.requires_grad_(False)"
            )
        if x.is_inference() and not torch.is_inference_mode_enabled():
            return (
                "it is an inference tensor (made under torch.inference_mode()), which "
                "cannot be updated in place outside inference mode; pass x.clone() made "
                "outside it"
            )
        return None

    def to_numpy(self, x: Array) -> np.ndarray:
        t = x.detach()
        # .cpu() of a device tensor is already a fresh host copy; a CPU tensor's .numpy()
        # would share its memory.
        host: np.ndarray = t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()
        return host

    def synchronize(self, device: Any, arrays: Sequence[Array] = ()) -> None:
        import torch

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def pack(
        self, arrays: Sequence[Array], out: Array | None = None, *, device: bool = False
    ) -> Array:
        import torch

        flat = [a.detach().reshape(-1) for a in arrays]
        if flat[0].device.type == "cpu":
            # A NumPy view of the tensor's memory: torch.cat writes where MPI reads.
            target = None if out is None else torch.from_numpy(out)
            return torch.cat(flat, out=target).numpy()
        if device:
            packed = torch.cat(flat, out=out)
            torch.cuda.current_stream(packed.device).synchronize()  # MPI reads it directly
            return packed
        host = torch.cat(flat).cpu()  # waits for the device
        if out is None:
            return host.numpy()
        out[...] = host.numpy()
        return out

    def unpack(self, buffer: Array, arrays: Sequence[Array]) -> list[Array]:
        import torch

        src = torch.as_tensor(buffer)  # a NumPy buffer is viewed, not copied
        src = src.to(arrays[0].device)  # one copy to the device when they are not on the CPU
        offset = 0
        for a in arrays:
            n = a.numel()
            a.copy_(src[offset : offset + n].view(a.shape))
            offset += n
        return list(arrays)

    def is_tracing(self, x: Array) -> bool:
        import torch

        if torch.compiler.is_compiling():
            return True
        return bool(x.is_cuda) and torch.cuda.is_current_stream_capturing()

    def step_kind(self, device: Any) -> str:
        return "torch CUDA graph" if device.type == "cuda" else "eager"


def has_nvidia_gpu() -> bool:
    """Whether this machine has an NVIDIA driver (and so, likely, a GPU CUDA can use)."""
    return os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None
