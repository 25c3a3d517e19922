"""One training path: every network with every optimizer, compiled, equals the book's loop.

``net.compile_step(optimizer)`` runs the same function on every backend — eagerly, under
``jax.jit``, or captured as a CUDA graph — so after 20 steps its parameters, optimizer
state, BatchNorm statistics and losses must equal those of the book's loop (``grads =
net.gradient(x, t)``; ``optimizer.update(net.params, grads)``) in float64 to 1e-10.  With
Dropout the compiled step draws its masks on the device, from keys drawn ahead in the eager
order: the masks of the book's loop with ``dropout_device_masks=True``.
"""

from __future__ import annotations

import numpy as np
import pytest

import xprop
import xprop.nets.network
from xprop.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, NesterovPaper, RMSprop
from xprop.training.step import EagerStep

IN, OUT, N, STEPS = 12, 4, 48, 20

NETWORKS = {
    "TwoLayerNet": lambda be: xprop.TwoLayerNet(IN, 10, OUT, "he", backend=be, seed=0),
    "MultiLayerNet+decay": lambda be: xprop.MultiLayerNet(
        IN, [10, 8], OUT, weight_decay_lambda=0.1, backend=be, seed=0
    ),
    "Extend+BatchNorm": lambda be: xprop.MultiLayerNetExtend(
        IN, [10, 8], OUT, use_batchnorm=True, backend=be, seed=0
    ),
    "Extend+BatchNorm+Dropout": lambda be: xprop.MultiLayerNetExtend(
        IN,
        [10, 8],
        OUT,
        use_batchnorm=True,
        use_dropout=True,
        dropout_ratio=0.3,
        backend=be,
        seed=0,
        dropout_device_masks=True,
    ),
}

OPTIMIZERS = {
    "SGD": lambda: SGD(lr=0.1),
    "Momentum": lambda: Momentum(lr=0.05),
    "Nesterov": lambda: Nesterov(lr=0.05),
    "NesterovPaper": lambda: NesterovPaper(lr=0.05),
    "AdaGrad": lambda: AdaGrad(lr=0.05),
    "RMSprop": lambda: RMSprop(lr=0.01),
    "Adam": lambda: Adam(lr=0.01),
}


def _data(be: xprop.Backend) -> tuple:
    rng = np.random.default_rng(5)
    return be.asarray(rng.standard_normal((N, IN))), be.asarray(rng.integers(0, OUT, N))


def _host(be: xprop.Backend, arrays: dict) -> dict[str, np.ndarray]:
    return {k: be.to_numpy(v) for k, v in arrays.items()}


def _assert_close(got: dict, want: dict, what: str, tol: float = 1e-10) -> None:
    assert got.keys() == want.keys(), what
    for key in want:
        # Relative to the array's size, absolute below 1: a bias before BatchNorm has a
        # zero gradient and stays at rounding noise, where only an absolute bound means much.
        scale = max(float(np.max(np.abs(want[key]))), 1.0)
        err = float(np.max(np.abs(got[key] - want[key]))) / scale
        assert err <= tol, f"{what} {key}: {err:.2e}"


@pytest.mark.parametrize("opt_name", OPTIMIZERS)
@pytest.mark.parametrize("net_name", NETWORKS)
def test_compiled_step_equals_the_book_loop(
    backend: xprop.Backend, net_name: str, opt_name: str
) -> None:
    be = backend
    x, t = _data(be)
    idx = be.to_numpy(be.rng(1).choice(N, (STEPS, 16)))
    book, compiled = NETWORKS[net_name](be), NETWORKS[net_name](be)
    book_opt, opt = OPTIMIZERS[opt_name](), OPTIMIZERS[opt_name]()
    step = compiled.compile_step(opt)
    xp = be.xp
    book_losses, losses = [], []
    for i in range(STEPS):
        rows = be.asarray(idx[i])
        xb, tb = xp.take(x, rows, axis=0), xp.take(t, rows, axis=0)
        grads = book.gradient(xb, tb)
        book_opt.update(book.params, grads)
        book_losses.append(float(be.to_numpy(book.last_loss)))
        losses.append(float(be.to_numpy(step(xb, tb))))
    what = f"{step.kind} {net_name} {opt_name}"
    # A bias right before BatchNorm has a zero gradient in exact arithmetic: it holds
    # rounding noise (amplified by AdaGrad's and Adam's normalisation), not a result.
    noise = {f"b{i}" for i in (1, 2)} if "BatchNorm" in net_name else set()
    want = {k: v for k, v in _host(be, book.params).items() if k not in noise}
    got = {k: v for k, v in _host(be, compiled.params).items() if k not in noise}
    _assert_close(got, want, what)
    # The batch means of those layers carry the same noise: their running means too.
    noisy = {f"running_mean{k[1:]}" for k in noise}
    want = {k: v for k, v in _host(be, book.running_stats()).items() if k not in noisy}
    got = {k: v for k, v in _host(be, compiled.running_stats()).items() if k not in noisy}
    _assert_close(got, want, what)
    for slot, arrays in book_opt.state.items():
        want = {k: v for k, v in _host(be, arrays).items() if k not in noise}
        got = {k: v for k, v in _host(be, opt.state[slot]).items() if k not in noise}
        _assert_close(got, want, f"{what} state {slot}")
    assert opt.iter == book_opt.iter == STEPS
    np.testing.assert_allclose(losses, book_losses, rtol=1e-10)
    # It trained: the loss fell (the book's loop is the reference for the numbers).
    assert min(book_losses[-5:]) < book_losses[0]


@pytest.mark.parametrize("net_name", ["Extend+BatchNorm+Dropout", "MultiLayerNet+decay"])
def test_run_equals_calls_and_the_eager_run(backend: xprop.Backend, net_name: str) -> None:
    """``step.run`` over 12 index rows = 12 calls = the eager step's run, Adam's count too."""
    be = backend
    x, t = _data(be)
    idx = be.rng(2).choice(N, (12, 16))
    by_run, by_call, eager = (NETWORKS[net_name](be) for _ in range(3))
    opts = [Adam(lr=0.01) for _ in range(3)]
    losses = by_run.compile_step(opts[0]).run(x, t, idx)
    step = by_call.compile_step(opts[1])
    xp = be.xp
    calls = [
        step(xp.take(x, idx[i, ...], axis=0), xp.take(t, idx[i, ...], axis=0)) for i in range(12)
    ]
    eager_losses = EagerStep(eager, opts[2]).run(x, t, idx)
    assert tuple(losses.shape) == (12,)
    np.testing.assert_allclose(be.to_numpy(losses), [float(be.to_numpy(v)) for v in calls])
    np.testing.assert_allclose(be.to_numpy(losses), be.to_numpy(eager_losses), rtol=1e-10)
    for net in (by_call, eager):
        _assert_close(_host(be, by_run.params), _host(be, net.params), net_name)
        _assert_close(_host(be, by_run.running_stats()), _host(be, net.running_stats()), "bn")
    assert [o.iter for o in opts] == [12, 12, 12]


def test_learning_rate_and_step_count_are_inputs(backend: xprop.Backend) -> None:
    """A learning-rate schedule and a resumed step count reach a compiled step."""
    be = backend
    x, t = _data(be)
    nets = [NETWORKS["TwoLayerNet"](be) for _ in range(2)]
    opts = [Adam(lr=0.01), Adam(lr=0.01)]
    step = nets[0].compile_step(opts[0])
    for i, lr in enumerate((0.01, 0.003, 0.001)):
        opts[0].lr = opts[1].lr = lr
        if i == 2:  # as after loading a checkpoint saved at step 40
            opts[0].iter = opts[1].iter = 40
        step(x, t)
        opts[1].update(nets[1].params, nets[1].gradient(x, t))
    _assert_close(_host(be, nets[0].params), _host(be, nets[1].params), step.kind)
    assert opts[0].iter == 41


def test_changed_batch_shape_and_rebound_params(backend: xprop.Backend) -> None:
    """A new batch size compiles anew (never a wrong result); params set from outside count."""
    be = backend
    x, t = _data(be)
    compiled, book = NETWORKS["Extend+BatchNorm"](be), NETWORKS["Extend+BatchNorm"](be)
    opt, book_opt = Momentum(lr=0.05), Momentum(lr=0.05)
    step = compiled.compile_step(opt)
    for n in (16, 9, 16, 31):
        if n == 9:  # the user sets new weights between steps (as load_params does)
            w = be.asarray(np.full((IN, 10), 0.01))
            compiled.params["W1"] = w
            book.params["W1"] = be.asarray(np.full((IN, 10), 0.01))
        step(x[:n, ...], t[:n])
        book_opt.update(book.params, book.gradient(x[:n, ...], t[:n]))
    _assert_close(_host(be, compiled.params), _host(be, book.params), step.kind)


def test_trainer_compiled_equals_the_book_loop(backend: xprop.Backend) -> None:
    be = backend
    rng = np.random.default_rng(0)
    data = [
        be.asarray(rng.standard_normal((60, IN))),
        be.asarray(rng.integers(0, OUT, 60)),
        be.asarray(rng.standard_normal((30, IN))),
        be.asarray(rng.integers(0, OUT, 30)),
    ]
    runs = []
    for compiled in (False, True):
        net = NETWORKS["Extend+BatchNorm"](be)
        trainer = xprop.Trainer(
            net, *data, epochs=3, mini_batch_size=16, optimizer="adam",
            optimizer_param={"lr": 0.01}, verbose=False, seed=3, compiled=compiled,
        )  # fmt: skip
        if not compiled:  # the eager step: the book's loop body
            assert type(trainer.step) is EagerStep
        trainer.train()
        runs.append((trainer, _host(be, net.params)))
    (book, want), (fast, got) = runs
    _assert_close(got, want, "Trainer")
    np.testing.assert_allclose(fast.train_loss_list, book.train_loss_list, rtol=1e-10)
    np.testing.assert_allclose(fast.test_acc_list, book.test_acc_list)
    assert len(fast.train_loss_list) == fast.max_iter == book.max_iter
    assert len(fast.train_acc_list) == len(book.train_acc_list) == 3


def test_bad_inputs_to_compile_step(numpy_backend: xprop.Backend) -> None:
    be = numpy_backend
    net = NETWORKS["TwoLayerNet"](be)
    other = xprop.TwoLayerNet(IN, 7, OUT, backend=be, seed=0)
    opt = Adam()
    x, t = _data(be)
    other.compile_step(opt)(x, t)  # the optimizer's state now belongs to other's params
    with pytest.raises(ValueError, match="create a new optimizer"):
        net.compile_step(opt)(x, t)
    with pytest.raises(TypeError, match=r"optimizer of xprop\.optimizers"):
        net.compile_step("adam")

    class NotANetwork:
        def __init__(self) -> None:
            self.params: dict = {}

        def gradient(self, x, t):
            return {}

        loss = accuracy = gradient

    with pytest.raises(
        TypeError, match=r"lacks backend, layers, last_layer, buffer_layers.*compiled=False"
    ):
        xprop.Trainer(NotANetwork(), x, t, x, t, verbose=False, compiled=True)


def test_compiled_steps_check_labels_and_indices_before_they_run(backend: xprop.Backend) -> None:
    """Nothing can raise inside a compiled program: labels and indices are checked first."""
    be = backend
    x, _ = _data(be)
    bad = be.asarray(np.array([0, 1, 7, 2] * (N // 4)))  # 7 of 4 classes
    # The case too: MultiLayerNetExtend(check_labels=True) with BatchNorm.
    extend = xprop.MultiLayerNetExtend(
        IN, [10], OUT, use_batchnorm=True, check_labels=True, backend=be, seed=0
    )
    extend_before = _host(be, extend.params)
    extend_step = extend.compile_step(Adam())
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        extend_step(x, bad)
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        extend_step.run(x, bad, np.zeros((2, 4), dtype=np.int64))
    _assert_close(_host(be, extend.params), extend_before, "nothing trained")
    net = xprop.TwoLayerNet(IN, 10, OUT, backend=be, seed=0)  # checks labels
    before = _host(be, net.params)
    step = net.compile_step(Adam())
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 7\]"):
        step(x, bad)
    with pytest.raises(ValueError, match="labels out of range"):
        step.run(x, bad, np.zeros((2, 4), dtype=np.int64))
    good = be.asarray(np.arange(N) % OUT)
    with pytest.raises(IndexError, match=r"indices in \[0, 1000\] but x has 48 samples"):
        step.run(x, good, np.array([[0, 1, 2, 1000]]))
    with pytest.raises(IndexError, match=r"indices in \[-1, 2\]"):
        step.run(x, good, be.asarray(np.array([[0, -1, 2]])))
    with pytest.raises(ValueError, match=r"integer array \(k, B\)"):
        step.run(x, good, np.zeros(4, dtype=np.int64))
    _assert_close(_host(be, net.params), before, "nothing trained")


class _NoSizes(xprop.nets.network.Network):
    """A network of a user's own that declares neither output_size nor input_size."""

    def __init__(self, be: xprop.Backend) -> None:
        super().__init__(be, seed=0)
        self.params = {"W1": self.rng.normal((IN, 3), scale=0.3), "b1": be.zeros(3)}
        self.layers["Affine1"] = xprop.Affine(self.params["W1"], self.params["b1"])
        self.last_layer = xprop.SoftmaxWithLoss()
        self.link({"Affine1": ("W1", "b1")})


def test_every_step_checks_labels_without_output_size(backend: xprop.Backend) -> None:
    """The number of classes comes from the scores: labels 9 and -4 for 3 classes are
    refused by ``step()`` and ``step.run`` on every path (JAX's compiled step trained on
    them when the network declared no ``output_size``)."""
    be = backend
    x, _ = _data(be)
    net = _NoSizes(be)
    before = _host(be, net.params)
    step = net.compile_step(Adam())
    for bad in (9, -4):
        t = be.asarray(np.array([0, 1, bad, 2] * (N // 4)))
        with pytest.raises(ValueError, match=rf"labels out of range: found values in .*{bad}"):
            step(x, t)
        with pytest.raises(ValueError, match=r"labels out of range.*3 classes"):
            step.run(x, t, np.zeros((2, 4), dtype=np.int64))
    _assert_close(_host(be, net.params), before, "nothing trained")
    assert step.optimizer.iter == 0


def test_run_checks_labels_changed_in_place_since_the_last_run(backend: xprop.Backend) -> None:
    """``t[0] = 40`` between two runs: the second run refuses it (the labels were checked
    once per array before, and the changed array trained silently)."""
    be = backend
    x, t = _data(be)
    if be.name == "jax":  # JAX arrays are immutable: a host label array can change
        t = be.to_numpy(t).copy()
    net = NETWORKS["TwoLayerNet"](be)
    step = net.compile_step(Adam())
    rows = np.arange(32).reshape(2, 16)
    step.run(x, t, rows)
    t[0] = 40
    before = _host(be, net.params)
    with pytest.raises(ValueError, match=r"labels out of range: found values in \[0, 40\]"):
        step.run(x, t, rows)
    _assert_close(_host(be, net.params), before, "nothing trained")
    assert step.optimizer.iter == 2
