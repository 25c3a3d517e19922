"""PyTorch: CUDA when available (a training step replayed as a CUDA graph), else the CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xprop.libraries._base import ArrayLibrary, BackendError

__all__ = ["CudaGraphStep", "TorchLibrary"]


class TorchLibrary(ArrayLibrary):
    """PyTorch through ``array_api_compat.torch``.

    Devices are normalised to carry an index (``cuda`` means ``cuda:<current>``), because
    tensors report ``cuda:0`` and ``torch.device("cuda") != torch.device("cuda:0")``.
    On CUDA, :meth:`compile_step` captures the step as a CUDA graph; on the CPU it is eager.
    MPI reads CPU tensors through a NumPy view of their memory, and CUDA tensors where they
    lie when the MPI is CUDA-aware.
    """

    name = "torch"
    module = "torch"
    install_hint = "pip install 'xprop[torch]'"
    device_buffers = True

    def load(self) -> Any:
        import array_api_compat.torch as xp

        return xp

    def version_info(self, xp: Any) -> dict[str, str]:
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

    def devices(self, xp: Any) -> list[Any]:
        import torch

        out = [torch.device("cpu")]
        if torch.cuda.is_available():
            out += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            out.append(torch.device("mps", 0))
        return out

    def default_device(self, xp: Any) -> Any:
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def parse_device(self, xp: Any, spec: Any) -> Any:
        import torch

        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError):
            raise BackendError(
                f"device {spec!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from None
        if device.index is None and device.type == "cuda":
            index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            device = torch.device("cuda", index)
        elif device.index is None and device.type == "mps":
            device = torch.device("mps", 0)
        return device

    def is_accelerator(self, device: Any) -> bool:
        return getattr(device, "type", "cpu") != "cpu"

    def to_numpy(self, x: Any) -> np.ndarray:
        t = x.detach()
        # .cpu() of a device tensor is already a fresh host copy; a CPU tensor's .numpy()
        # would share its memory.
        return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()

    def synchronize(self, device: Any, arrays: Sequence[Any] = ()) -> None:
        import torch

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    def pack(self, arrays: Sequence[Any], out: Any = None, *, device: bool = False) -> Any:
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

    def unpack(self, buffer: Any, arrays: Sequence[Any]) -> list[Any]:
        import torch

        src = torch.as_tensor(buffer)  # a NumPy buffer is viewed, not copied
        src = src.to(arrays[0].device)  # one copy to the device when they are not on the CPU
        offset = 0
        for a in arrays:
            n = a.numel()
            a.copy_(src[offset : offset + n].view(a.shape))
            offset += n
        return list(arrays)

    def is_tracing(self, x: Any) -> bool:
        import torch

        if torch.compiler.is_compiling():
            return True
        return bool(x.is_cuda) and torch.cuda.is_current_stream_capturing()

    def compile_step(self, net: Any, lr: float) -> Any:
        if net.backend.device.type == "cuda":
            return CudaGraphStep(net, lr)
        return super().compile_step(net, lr)


class CudaGraphStep:
    """``net.train_step`` captured once as a CUDA graph, then replayed: one launch a step.

    At the book's size a step is some 35 kernels of a few microseconds of work each, and
    launching them costs more than running them; a replayed graph launches them all at once.
    Inputs are copied into static buffers that the graph reads; the graph updates the
    parameters in place (the same tensors as ``net.params``).  A new input shape captures a
    new graph.  Warm-up runs on a side stream first (as PyTorch requires), and the parameters
    are restored afterwards, so compiling never changes the training result.

    The labels are not range-checked inside the graph (that would read the device):
    validate them once before training, as :func:`xprop.load_mnist` does.
    """

    kind = "torch CUDA graph"
    warmup_steps = 3

    def __init__(self, net: Any, lr: float) -> None:
        import torch

        self.net, self.lr = net, lr
        self._torch = torch
        self._graphs: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._captured_params: tuple[int, ...] = ()

    def _current(self) -> None:
        """Forget every graph if ``net.params`` holds other tensors than those captured.

        A graph writes into the tensors it was captured with; after ``load_params`` or a
        user's ``net.params[k] = ...`` it must be captured anew around the new ones.
        """
        now = tuple(id(v) for v in self.net.params.values())
        if now != self._captured_params:
            self._graphs.clear()
            self._captured_params = now

    def __call__(self, x: Any, t: Any) -> Any:
        self._current()
        key = ("step", tuple(x.shape), x.dtype, tuple(t.shape), t.dtype)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture_step(x, t)
        graph, static_x, static_t, static_loss = entry
        static_x.copy_(x)
        static_t.copy_(t)
        graph.replay()
        return static_loss.clone()  # the graph overwrites its own loss at the next replay

    def run(self, x: Any, t: Any, index_batches: Any) -> Any:
        """Steps on ``take(x, index_batches[i])`` for each row ``i``; their losses, ``(k,)``.

        The gather runs inside the graph, from a static index buffer; ``x`` and ``t`` are
        read where they lie (a new ``x`` or ``t`` captures a new graph).
        """
        torch = self._torch
        self._current()
        key = ("run", x.data_ptr(), tuple(x.shape), t.data_ptr(), index_batches.shape[1])
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture_run(x, t, index_batches[0])
        graph, static_idx, static_loss = entry
        losses = torch.empty(index_batches.shape[0], dtype=static_loss.dtype, device=x.device)
        for i in range(index_batches.shape[0]):
            static_idx.copy_(index_batches[i])
            graph.replay()
            losses[i] = static_loss
        return losses

    def _capture_step(self, x: Any, t: Any) -> tuple[Any, ...]:
        static_x, static_t = x.clone(), t.clone()

        def step() -> Any:
            return self.net.train_step(static_x, static_t, self.lr)

        graph, loss = self._capture(step, x.device)
        return graph, static_x, static_t, loss

    def _capture_run(self, x: Any, t: Any, first_idx: Any) -> tuple[Any, ...]:
        torch = self._torch
        static_idx = first_idx.clone()

        def step() -> Any:
            xb = torch.index_select(x, 0, static_idx)
            tb = torch.index_select(t, 0, static_idx)
            return self.net.train_step(xb, tb, self.lr)

        graph, loss = self._capture(step, x.device)
        return graph, static_idx, loss

    def _capture(self, step: Any, device: Any) -> tuple[Any, Any]:
        torch = self._torch
        params = self.net.params
        saved = {k: v.clone() for k, v in params.items()}
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup_steps):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            for k, v in saved.items():  # warm-up steps must not count as training
                params[k].copy_(v)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                loss = step()
        return graph, loss
