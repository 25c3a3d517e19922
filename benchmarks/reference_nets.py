"""Reference two-layer nets that xprop is timed against: the book's code, hand-optimised code.

Every runner here trains the same network (Affine - ReLU - Affine - softmax cross-entropy,
SGD) and offers the same four operations to the harness in ``bench_train.py``:

``step()``
    one training step (gradient + update) on a fixed batch that already lives on the device;
``loop_body()``
    the body of the book's training loop: draw a random batch, gather it, step, record the loss;
``evaluate()``
    accuracy over the whole training and test sets (returns two Python floats);
``synchronize()``
    wait for queued device work, so that clocks are read honestly.

Runners that cannot do an operation (the matmul floor has no loss, so no loop) leave it out of
``modes``.  All runners start from the same host weights ``init`` (float64, book's 0.01 scale).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from book_convnets import Affine, Relu, SoftmaxWithLoss  # the book's common/layers.py

LEARNING_RATE = 0.1  # the book's ch. 5 value
PARAM_KEYS = ("W1", "b1", "W2", "b2")


@dataclass(frozen=True)
class Config:
    """Network and batch sizes of one benchmark configuration."""

    name: str
    input_size: int
    hidden_size: int
    output_size: int
    batch_size: int

    @property
    def shape(self) -> str:
        return f"{self.input_size}-{self.hidden_size}-{self.output_size}"


@dataclass
class HostData:
    """The data set on the host: float images in [0, 1], int64 labels, one fixed batch."""

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    source: str
    x_batch: np.ndarray | None = None
    t_batch: np.ndarray | None = None

    def one_hot(self, t: np.ndarray, dtype: Any, classes: int = 10) -> np.ndarray:
        out = np.zeros((t.shape[0], classes), dtype=dtype)
        out[np.arange(t.shape[0]), t] = 1
        return out


def initial_params(cfg: Config, seed: int) -> dict[str, np.ndarray]:
    """The book's initialisation (``0.01 * randn``, zero biases) in float64 on the host."""
    rng = np.random.default_rng(seed)
    return {
        "W1": 0.01 * rng.standard_normal((cfg.input_size, cfg.hidden_size)),
        "b1": np.zeros(cfg.hidden_size),
        "W2": 0.01 * rng.standard_normal((cfg.hidden_size, cfg.output_size)),
        "b2": np.zeros(cfg.output_size),
    }


class Runner:
    """Interface shared by every implementation timed by ``bench_train.py``."""

    key = "runner"
    label = "runner"
    note = ""
    modes: tuple[str, ...] = ("step", "loop", "eval", "protocol")
    baseline = False
    device_kind = "cpu"  # "cpu" or "gpu": GPU-only configs skip CPU runners

    def prepare(self, cfg: Config, data: HostData, init: dict[str, np.ndarray], seed: int):
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def loop_body(self) -> None:
        raise NotImplementedError

    def evaluate(self) -> tuple[float, float]:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for the device; a no-op on the CPU."""

    def protocol(self, iters: int, iter_per_epoch: int) -> tuple[tuple[float, float], float]:
        """The book's ch. 5 run: ``iters`` loop bodies, train/test accuracy every epoch.

        Returns the last accuracies and the seconds spent evaluating (the device
        synchronised before each evaluation, so queued training is not charged to it).
        """
        accs, eval_s = (math.nan, math.nan), 0.0
        for i in range(iters):
            self.loop_body()
            if i % iter_per_epoch == 0:
                self.synchronize()
                start = time.perf_counter()
                accs = self.evaluate()
                eval_s += time.perf_counter() - start
        self.synchronize()
        return accs, eval_s

    def host_params(self) -> dict[str, np.ndarray]:
        """The current weights as float64 NumPy arrays (for the correctness check)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------
# The book's ch05/two_layer_net.py (its layers: book_convnets, the book's common/layers.py)
# --------------------------------------------------------------------------------------


class BookTwoLayerNet:
    """``ch05/two_layer_net.py`` as printed, except that weights come from ``init``."""

    def __init__(self, init, dtype):
        self.params = {k: np.array(v, dtype=dtype) for k, v in init.items()}
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def accuracy(self, x, t):
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.lastLayer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


class BookStyle(Runner):
    """The book's network and training loop, with one-hot labels as in ``ch05/train_neuralnet.py``.

    ``weight_dtype=None`` keeps weights in the data's dtype (the fair baseline);
    ``"float64"`` with float32 images reproduces the book's own dtype mix (its
    ``np.random.randn`` weights and float64 one-hot labels).
    """

    def __init__(self, dtype: str, weight_dtype: str | None = None):
        self.dtype = np.dtype(dtype)
        self.weight_dtype = np.dtype(weight_dtype or dtype)
        self.mixed = self.weight_dtype != self.dtype
        if self.mixed:
            self.key = "book-mixed"
            self.label = f"book-style NumPy ({self.weight_dtype.name} weights)"
            self.note = (
                f"the book's dtype mix: {self.dtype.name} images, {self.weight_dtype.name} "
                "weights and one-hot labels (informative)"
            )
        else:
            self.key = "book"
            self.label = "book-style NumPy (baseline)"
            self.note = "the book's TwoLayerNet and layers, weights in the data dtype"
            self.baseline = True

    def prepare(self, cfg, data, init, seed):
        self.net = BookTwoLayerNet(init, self.weight_dtype)
        self.x_train = data.x_train
        self.t_train = data.one_hot(data.t_train, self.weight_dtype, cfg.output_size)
        self.x_test = data.x_test
        self.t_test = data.one_hot(data.t_test, self.weight_dtype, cfg.output_size)
        self.x_batch = data.x_batch
        self.t_batch = data.one_hot(data.t_batch, self.weight_dtype, cfg.output_size)
        self.train_size = data.x_train.shape[0]
        self.batch_size = cfg.batch_size
        np.random.seed(seed)
        self.train_loss_list = []

    def _update(self, grad):
        for key in PARAM_KEYS:
            self.net.params[key] -= LEARNING_RATE * grad[key]

    def step(self):
        self._update(self.net.gradient(self.x_batch, self.t_batch))

    def loop_body(self):
        batch_mask = np.random.choice(self.train_size, self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        grad = self.net.gradient(x_batch, t_batch)
        self._update(grad)
        loss = self.net.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)

    def evaluate(self):
        train_acc = self.net.accuracy(self.x_train, self.t_train)
        test_acc = self.net.accuracy(self.x_test, self.t_test)
        return float(train_acc), float(test_acc)

    def host_params(self):
        return {k: np.array(v, dtype=np.float64) for k, v in self.net.params.items()}

    def gradient_of(self, params, x, t):
        """Book gradient at ``params`` in float64 (reference for the correctness check)."""
        net = BookTwoLayerNet(params, np.float64)
        onehot = np.zeros((t.shape[0], params["b2"].shape[0]))
        onehot[np.arange(t.shape[0]), t] = 1
        return net.gradient(np.asarray(x, dtype=np.float64), onehot)


# --------------------------------------------------------------------------------------
# Hand-optimised: same maths, no wasted work (NumPy, or CuPy through the same code)
# --------------------------------------------------------------------------------------


def _module_name(m) -> str:
    return m.__name__.split(".")[0]


class HandOptimised(Runner):
    """The same maths written for speed with a NumPy-compatible module (NumPy or CuPy).

    Preallocated buffers and ``out=``, in-place updates, no input gradient for the first
    Affine, fused softmax-cross-entropy gradient ``(softmax - onehot) / N`` with the learning
    rate folded into it (so every gradient buffer already holds ``lr * grad``), sums along an
    axis as BLAS products with ones (as xprop does), integer labels, and the loss read off the
    training forward pass instead of a second forward pass.
    Evaluation runs in chunks of ``eval_chunk`` rows through reused buffers.
    """

    eval_chunk = 10000

    def __init__(self, dtype: str, module: Any = np):
        self.m = module
        self.dtype = dtype
        lib = _module_name(module)
        self.key = "hand" if lib == "numpy" else f"hand-{lib}"
        self.label = "hand-optimised NumPy" if lib == "numpy" else "hand-optimised CuPy"
        self.note = "same maths, buffers reused, no dx for the first layer, fused softmax-CE"
        self.device_kind = "cpu" if lib == "numpy" else "gpu"

    def prepare(self, cfg, data, init, seed):
        m, dt = self.m, self.dtype
        n, d, h, c = cfg.batch_size, cfg.input_size, cfg.hidden_size, cfg.output_size
        self.W1, self.b1, self.W2, self.b2 = (m.asarray(init[k], dtype=dt) for k in PARAM_KEYS)
        self.x_train = m.asarray(data.x_train, dtype=dt)
        self.t_train = m.asarray(data.t_train)
        self.x_test = m.asarray(data.x_test, dtype=dt)
        self.t_test = m.asarray(data.t_test)
        self.x_batch = m.asarray(data.x_batch, dtype=dt)
        self.t_batch = m.asarray(data.t_batch)
        self.h = m.empty((n, h), dtype=dt)
        self.dh = m.empty((n, h), dtype=dt)
        self.z = m.empty((n, c), dtype=dt)
        self.zmax = m.empty((n, 1), dtype=dt)
        self.zsum = m.empty((n, 1), dtype=dt)
        self.gW1 = m.empty((d, h), dtype=dt)
        self.gb1 = m.empty((h,), dtype=dt)
        self.gW2 = m.empty((h, c), dtype=dt)
        self.gb2 = m.empty((c,), dtype=dt)
        self.rows = m.arange(n)
        # sums as BLAS products with ones: faster than m.sum along an axis at these sizes
        self.ones_n = m.ones((n,), dtype=dt)
        self.ones_c = m.ones((c, 1), dtype=dt)
        self.scale = LEARNING_RATE / n
        k = min(self.eval_chunk, max(data.x_train.shape[0], data.x_test.shape[0]))
        self.eh = m.empty((k, h), dtype=dt)
        self.ez = m.empty((k, c), dtype=dt)
        self.rng = np.random.default_rng(seed)
        self.train_size = data.x_train.shape[0]
        self.batch_size = n
        self.train_loss_list = []

    def _step(self, x, t, want_loss=False):
        m, h, z, dh = self.m, self.h, self.z, self.dh
        # forward
        m.matmul(x, self.W1, out=h)
        h += self.b1
        m.maximum(h, 0, out=h)
        m.matmul(h, self.W2, out=z)
        z += self.b2
        m.max(z, axis=1, keepdims=True, out=self.zmax)
        z -= self.zmax
        loss = None
        if want_loss:
            z_true = z[self.rows, t]
        m.exp(z, out=z)
        m.matmul(z, self.ones_c, out=self.zsum)
        if want_loss:
            loss = m.mean(m.log(self.zsum[:, 0]) - z_true)
        # dy = lr * (softmax - onehot) / N, in z
        m.divide(self.scale, self.zsum, out=self.zsum)
        z *= self.zsum
        z[self.rows, t] -= self.scale
        # backward (every gradient is already scaled by lr)
        m.matmul(h.T, z, out=self.gW2)
        m.matmul(self.ones_n, z, out=self.gb2)
        m.matmul(z, self.W2.T, out=dh)
        m.multiply(dh, h > 0, out=dh)
        m.matmul(x.T, dh, out=self.gW1)
        m.matmul(self.ones_n, dh, out=self.gb1)
        # update
        self.W1 -= self.gW1
        self.b1 -= self.gb1
        self.W2 -= self.gW2
        self.b2 -= self.gb2
        return loss

    def step(self):
        self._step(self.x_batch, self.t_batch)

    def loop_body(self):
        # take() without out=: NumPy's out= with mode="raise" goes through a temporary copy
        idx = self.m.asarray(self.rng.integers(0, self.train_size, self.batch_size))
        x = self.m.take(self.x_train, idx, axis=0)
        t = self.m.take(self.t_train, idx, axis=0)
        self.train_loss_list.append(self._step(x, t, want_loss=True))

    def _correct(self, x, t):
        m = self.m
        correct = 0
        for start in range(0, x.shape[0], self.eval_chunk):
            xs = x[start : start + self.eval_chunk]
            hs = self.eh[: xs.shape[0]]
            zs = self.ez[: xs.shape[0]]
            m.matmul(xs, self.W1, out=hs)
            hs += self.b1
            m.maximum(hs, 0, out=hs)
            m.matmul(hs, self.W2, out=zs)
            zs += self.b2
            correct = correct + m.count_nonzero(
                m.argmax(zs, axis=1) == t[start : start + xs.shape[0]]
            )
        return int(correct) / x.shape[0]

    def evaluate(self):
        return self._correct(self.x_train, self.t_train), self._correct(self.x_test, self.t_test)

    def synchronize(self):
        if _module_name(self.m) == "cupy":
            self.m.cuda.get_current_stream().synchronize()

    def host_params(self):
        get = (lambda a: a.get()) if _module_name(self.m) == "cupy" else np.asarray
        return {k: np.array(get(getattr(self, k)), dtype=np.float64) for k in PARAM_KEYS}


class MatmulFloor(Runner):
    """Only the matrix products of a step: x@W1, h@W2, h.T@dy, dy@W2.T, x.T@dh (``out=``).

    For evaluation: x@W1 and h@W2 over all images, chunked like the hand-optimised code.
    No bias, activation, softmax or update: the time no implementation can beat.
    """

    modes = ("step", "eval")

    def __init__(self, dtype: str, module: Any = np):
        self.m = module
        self.dtype = dtype
        lib = _module_name(module)
        if lib == "torch":
            self.key, self.label, self.device_kind = "floor-torch", "matmul floor (torch)", "gpu"
        elif lib == "cupy":
            self.key, self.label, self.device_kind = "floor-cupy", "matmul floor (CuPy)", "gpu"
        else:
            self.key, self.label = "floor", "matmul floor (NumPy)"
        self.note = "the five matmuls of a step and nothing else (BLAS floor)"
        self.torch_device = None

    def _array(self, a):
        if _module_name(self.m) == "torch":
            return self.m.as_tensor(np.asarray(a, dtype=self.dtype), device=self.torch_device)
        return self.m.asarray(a, dtype=self.dtype)

    def _empty(self, shape):
        if _module_name(self.m) == "torch":
            return self.m.empty(shape, dtype=getattr(self.m, self.dtype), device=self.torch_device)
        return self.m.empty(shape, dtype=self.dtype)

    def prepare(self, cfg, data, init, seed):
        n, d, h, c = cfg.batch_size, cfg.input_size, cfg.hidden_size, cfg.output_size
        self.W1 = self._array(init["W1"])
        self.W2 = self._array(init["W2"])
        self.x = self._array(data.x_batch)
        self.h, self.dh = self._empty((n, h)), self._empty((n, h))
        self.z = self._empty((n, c))
        self.gW1, self.gW2 = self._empty((d, h)), self._empty((h, c))
        self.x_all = [self._array(data.x_train), self._array(data.x_test)]
        k = min(HandOptimised.eval_chunk, data.x_train.shape[0])
        self.eh, self.ez = self._empty((k, h)), self._empty((k, c))
        # backward inputs: use the forward activations so values stay realistic
        self.W2T, self.xT, self.hT = self.W2.T, self.x.T, self.h.T

    def step(self):
        mm = self.m.matmul
        mm(self.x, self.W1, out=self.h)
        mm(self.h, self.W2, out=self.z)
        mm(self.hT, self.z, out=self.gW2)
        mm(self.z, self.W2T, out=self.dh)
        mm(self.xT, self.dh, out=self.gW1)

    def evaluate(self):
        mm, k = self.m.matmul, HandOptimised.eval_chunk
        for x in self.x_all:
            for start in range(0, x.shape[0], k):
                xs = x[start : start + k]
                mm(xs, self.W1, out=self.eh[: xs.shape[0]])
                mm(self.eh[: xs.shape[0]], self.W2, out=self.ez[: xs.shape[0]])
        return math.nan, math.nan

    def synchronize(self):
        lib = _module_name(self.m)
        if lib == "cupy":
            self.m.cuda.get_current_stream().synchronize()
        elif lib == "torch" and self.torch_device is not None and self.torch_device.type == "cuda":
            self.m.cuda.synchronize(self.torch_device)


# --------------------------------------------------------------------------------------
# PyTorch eager
# --------------------------------------------------------------------------------------


class TorchEager(Runner):
    """PyTorch eager as users write it: autograd, ``F.cross_entropy``, manual SGD.

    The update is ``p -= lr * p.grad`` under ``torch.no_grad()`` followed by ``p.grad = None``;
    batches are drawn on the device with ``torch.randint`` and the loss is kept as a tensor
    (no ``.item()`` per step, so no device sync inside the loop).
    """

    def __init__(self, dtype: str, device: str = "cpu"):
        import torch

        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.device_kind = "gpu" if self.device.type != "cpu" else "cpu"
        self.key = "torch-eager"
        self.label = f"PyTorch eager ({self.device.type})"
        self.note = "autograd + F.cross_entropy + manual SGD under torch.no_grad()"

    def prepare(self, cfg, data, init, seed):
        torch = self.torch
        dev, dt = self.device, self.dtype

        def put(a, dtype=dt):
            return torch.as_tensor(np.asarray(a), device=dev).to(dtype).contiguous()

        self.params = [put(init[k]).requires_grad_(True) for k in PARAM_KEYS]
        self.x_train, self.t_train = put(data.x_train), put(data.t_train, torch.int64)
        self.x_test, self.t_test = put(data.x_test), put(data.t_test, torch.int64)
        self.x_batch, self.t_batch = put(data.x_batch), put(data.t_batch, torch.int64)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(seed)
        self.train_size, self.batch_size = data.x_train.shape[0], cfg.batch_size
        self.train_loss_list = []

    def _step(self, x, t):
        torch = self.torch
        W1, b1, W2, b2 = self.params
        h = torch.relu(x @ W1 + b1)
        loss = torch.nn.functional.cross_entropy(h @ W2 + b2, t)
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p -= LEARNING_RATE * p.grad
                p.grad = None
        return loss.detach()

    def step(self):
        self._step(self.x_batch, self.t_batch)

    def loop_body(self):
        idx = self.torch.randint(
            0, self.train_size, (self.batch_size,), device=self.device, generator=self.gen
        )
        loss = self._step(self.x_train[idx], self.t_train[idx])
        self.train_loss_list.append(loss)

    def _accuracy(self, x, t):
        torch = self.torch
        W1, b1, W2, b2 = self.params
        with torch.no_grad():
            y = torch.relu(x @ W1 + b1) @ W2 + b2
            return (torch.argmax(y, dim=1) == t).sum().item() / x.shape[0]

    def evaluate(self):
        return self._accuracy(self.x_train, self.t_train), self._accuracy(self.x_test, self.t_test)

    def synchronize(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def host_params(self):
        return {
            k: p.detach().cpu().numpy().astype(np.float64)
            for k, p in zip(PARAM_KEYS, self.params, strict=True)
        }


class TorchGraph(TorchEager):
    """The PyTorch eager step above, captured once as a CUDA graph and replayed (CUDA only).

    PyTorch's documented whole-network capture: warm-up on a side stream, gradients set to
    ``None`` before capture (so backward allocates them inside the graph), static input
    buffers that each call copies into.  The loop body draws its batch on the device and
    gathers it into the static buffers, outside the graph.
    """

    def __init__(self, dtype: str, device: str = "cuda"):
        super().__init__(dtype, device)
        if self.device.type != "cuda":
            raise ValueError("a CUDA graph needs a CUDA device")
        self.key = "torch-graph"
        self.label = "PyTorch CUDA graph (cuda)"
        self.note = "the PyTorch eager step captured with torch.cuda.graph and replayed"

    def prepare(self, cfg, data, init, seed):
        super().prepare(cfg, data, init, seed)
        torch = self.torch
        self.static_x, self.static_t = self.x_batch.clone(), self.t_batch.clone()
        saved = [p.detach().clone() for p in self.params]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                TorchEager._step(self, self.static_x, self.static_t)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, v in zip(self.params, saved, strict=True):
                p.copy_(v)
                p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            W1, b1, W2, b2 = self.params
            h = torch.relu(self.static_x @ W1 + b1)
            self.static_loss = torch.nn.functional.cross_entropy(h @ W2 + b2, self.static_t)
            self.static_loss.backward()
            with torch.no_grad():
                for p in self.params:
                    p -= LEARNING_RATE * p.grad

    def _step(self, x, t):
        self.static_x.copy_(x)
        self.static_t.copy_(t)
        self.graph.replay()
        return self.static_loss.clone()


class JaxJit(Runner):
    """JAX as users write it: ``jax.value_and_grad`` of the loss, SGD, all under ``jax.jit``.

    ``log_softmax`` + ``take_along_axis`` cross-entropy, parameters donated, indices drawn on
    the host and gathered inside the jitted step; evaluation jitted in chunks.
    """

    key = "jax-jit"
    note = "jax.jit(value_and_grad + SGD), donated parameters"

    def __init__(self, dtype: str, device: Any = None):
        import jax

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.jax, self.jnp, self.dtype = jax, jax.numpy, dtype
        self.device = jax.devices()[0] if device is None else device
        self.device_kind = "cpu" if self.device.platform == "cpu" else "gpu"
        self.label = f"JAX jit (hand-written, {self.device.platform})"

    def prepare(self, cfg, data, init, seed):
        jax, jnp = self.jax, self.jnp

        def put(a, dtype=self.dtype):
            return jax.device_put(np.asarray(a, dtype=dtype), self.device)

        self.params = {k: put(init[k]) for k in PARAM_KEYS}
        self.x_train, self.t_train = put(data.x_train), put(data.t_train, np.int32)
        self.x_test, self.t_test = put(data.x_test), put(data.t_test, np.int32)
        self.x_batch, self.t_batch = put(data.x_batch), put(data.t_batch, np.int32)

        def loss_fn(p, x, t):
            h = jax.nn.relu(x @ p["W1"] + p["b1"])
            logp = jax.nn.log_softmax(h @ p["W2"] + p["b2"])
            return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

        def step(p, x, t):
            loss, g = jax.value_and_grad(loss_fn)(p, x, t)
            return {k: p[k] - LEARNING_RATE * g[k] for k in p}, loss

        def gathered(p, x_all, t_all, idx):
            return step(p, jnp.take(x_all, idx, axis=0), jnp.take(t_all, idx, axis=0))

        def correct(p, x, t):
            h = jax.nn.relu(x @ p["W1"] + p["b1"])
            return jnp.sum(jnp.argmax(h @ p["W2"] + p["b2"], axis=1) == t)

        self._step = jax.jit(step, donate_argnums=0)
        self._gathered = jax.jit(gathered, donate_argnums=0)
        self._correct = jax.jit(correct)
        self.rng = np.random.default_rng(seed)
        self.train_size, self.batch_size = data.x_train.shape[0], cfg.batch_size
        self.train_loss_list = []

    def step(self):
        self.params, _ = self._step(self.params, self.x_batch, self.t_batch)

    def loop_body(self):
        idx = self.jax.device_put(
            self.rng.integers(0, self.train_size, self.batch_size, dtype=np.int32), self.device
        )
        self.params, loss = self._gathered(self.params, self.x_train, self.t_train, idx)
        self.train_loss_list.append(loss)

    def _accuracy(self, x, t):
        k = HandOptimised.eval_chunk
        hits = sum(
            self._correct(self.params, x[i : i + k], t[i : i + k]) for i in range(0, x.shape[0], k)
        )
        return int(hits) / x.shape[0]

    def evaluate(self):
        return self._accuracy(self.x_train, self.t_train), self._accuracy(self.x_test, self.t_test)

    def synchronize(self):
        self.jax.block_until_ready((self.params, self.train_loss_list[-1:]))

    def host_params(self):
        return {k: np.asarray(self.params[k], dtype=np.float64) for k in PARAM_KEYS}


# --------------------------------------------------------------------------------------
# xprop
# --------------------------------------------------------------------------------------


class Xprop(Runner):
    """xprop's ``TwoLayerNet`` on one backend, driven three ways (``how``).

    ``"book"``: ``grads = net.gradient(x, t)`` then
    ``for k in net.params: net.params[k] -= lr * grads[k]``, and in the loop body a second
    forward pass ``net.loss(x, t)`` for the recorded loss, as the book does.
    ``"step"``: the eager step, ``EagerStep(net, SGD(lr))`` called once per step (what
    ``net.compile_step(lr)`` is on NumPy); its return value is the recorded loss.
    ``"compiled"``: ``step = net.compile_step(lr)`` (``jax.jit`` on JAX, a CUDA graph for torch
    on CUDA, the eager step elsewhere), and in the protocol an epoch's minibatch indices
    drawn at once and run with ``step.run``, as ``examples/train_mnist.py`` does by default.
    """

    HOW: ClassVar[dict[str, tuple[str, str]]] = {
        "book": ("gradient + update loop", "net.gradient + `params[k] -= lr * grads[k]`"),
        "step": ("eager step", "EagerStep(net, SGD(lr))(x, t): the compiled step's eager form"),
        "compiled": ("compiled step", "net.compile_step(lr); an epoch per step.run"),
    }

    def __init__(self, backend: str, dtype: str, device: Any = None, how: str = "book"):
        import xprop

        self.be = xprop.get_backend(backend, device=device, dtype=dtype)
        self.how = how
        self.device_kind = "gpu" if self.be.is_accelerator else "cpu"
        suffix = {"book": "", "step": "-step", "compiled": "-compiled"}[how]
        self.key = f"xprop-{backend}{suffix}"
        where = "" if self.device_kind == "cpu" else f", {self.be.device}"
        label, self.note = self.HOW[how]
        if how == "compiled":
            kind = xprop.TwoLayerNet(2, 2, 2, backend=self.be, seed=0).compile_step(0.1).kind
            label = f"{label} ({kind})"
        self.label = f"xprop [{backend}{where}] {label}"

    def prepare(self, cfg, data, init, seed):
        import xprop
        from xprop.training.step import EagerStep

        be = self.be
        # The per-step label range check would read the device every step (a sync on a
        # GPU) and compiled steps cannot make it; the labels are validated once here
        # instead, as examples/train_mnist.py does.
        if not (data.t_train.min() >= 0 and data.t_train.max() < cfg.output_size):
            raise ValueError("training labels out of range")
        self.net = xprop.TwoLayerNet(
            cfg.input_size,
            cfg.hidden_size,
            cfg.output_size,
            backend=be,
            seed=seed,
            check_labels=False,
        )
        self.step_fn = None
        if self.how == "compiled":
            self.step_fn = self.net.compile_step(LEARNING_RATE)
        elif self.how == "step":
            self.step_fn = EagerStep(self.net, xprop.SGD(LEARNING_RATE))
        self.x_train, self.t_train = be.asarray(data.x_train), be.asarray(data.t_train)
        self.x_test, self.t_test = be.asarray(data.x_test), be.asarray(data.t_test)
        self.x_batch, self.t_batch = be.asarray(data.x_batch), be.asarray(data.t_batch)
        self.rng = be.rng(seed)
        self.train_size, self.batch_size = data.x_train.shape[0], cfg.batch_size
        self.train_loss_list = []

    def _update(self, x, t):
        net = self.net
        if self.step_fn is not None:
            return self.step_fn(x, t)
        grads = net.gradient(x, t)
        for key in net.params:
            net.params[key] -= LEARNING_RATE * grads[key]
        return None

    def step(self):
        self._update(self.x_batch, self.t_batch)

    def loop_body(self):
        xp = self.be.xp
        batch_mask = self.rng.choice(self.train_size, self.batch_size)
        x_batch = xp.take(self.x_train, batch_mask, axis=0)
        t_batch = xp.take(self.t_train, batch_mask, axis=0)
        loss = self._update(x_batch, t_batch)
        if loss is None:
            loss = self.net.loss(x_batch, t_batch)
        self.train_loss_list.append(loss)

    def protocol(self, iters, iter_per_epoch):
        if self.how != "compiled":
            return super().protocol(iters, iter_per_epoch)
        # examples/train_mnist.py's fast path: one draw and one dispatch chain per epoch.
        accs, eval_s, done = (math.nan, math.nan), 0.0, 0
        for stop in range(0, iters, iter_per_epoch):
            batches = self.rng.choice(self.train_size, (stop + 1 - done, self.batch_size))
            self.train_loss_list.append(self.step_fn.run(self.x_train, self.t_train, batches))
            done = stop + 1
            self.synchronize()
            start = time.perf_counter()
            accs = self.evaluate()
            eval_s += time.perf_counter() - start
        if done < iters:
            batches = self.rng.choice(self.train_size, (iters - done, self.batch_size))
            self.train_loss_list.append(self.step_fn.run(self.x_train, self.t_train, batches))
        self.synchronize()
        return accs, eval_s

    def evaluate(self):
        train_acc = self.net.accuracy(self.x_train, self.t_train)
        test_acc = self.net.accuracy(self.x_test, self.t_test)
        return float(train_acc), float(test_acc)

    def synchronize(self):
        # JAX queues work per array: wait for the parameters and the recorded losses.
        self.be.synchronize(*self.net.params.values(), *self.train_loss_list[-1:])

    def host_params(self):
        return {
            k: np.array(self.be.to_numpy(self.net.params[k]), dtype=np.float64) for k in PARAM_KEYS
        }

    def gradient_host(self, x, t):
        """xprop's gradient on host data, as float64 NumPy arrays (for the correctness check)."""
        grads = self.net.gradient(self.be.asarray(x), self.be.asarray(t))
        return {k: np.array(self.be.to_numpy(grads[k]), dtype=np.float64) for k in PARAM_KEYS}
