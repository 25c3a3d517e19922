"""Trainer: the book's loop and evaluation schedule, the same run on every backend for one
seed, one device read per epoch, progress lines, divergence and argument errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import xprop
from xprop import Adam, MultiLayerNetExtend, Trainer, TwoLayerNet


def _data(be: xprop.Backend, n_train: int = 300, n_test: int = 100, seed: int = 0) -> tuple:
    """Three Gaussian clusters in 10 dimensions (easy, but not trivially separable)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 10)) * 1.5
    labels = rng.integers(0, 3, n_train + n_test)
    x = centers[labels] + rng.standard_normal((n_train + n_test, 10))
    return (
        be.asarray(x[:n_train]),
        be.asarray(labels[:n_train]),
        be.asarray(x[n_train:]),
        be.asarray(labels[n_train:]),
    )


def _net(be: xprop.Backend, **options) -> MultiLayerNetExtend:
    return MultiLayerNetExtend(10, [16, 16], 3, **options, backend=be, seed=0)


def test_trains_on_every_backend(backend32: xprop.Backend) -> None:
    data = _data(backend32)
    net = _net(backend32, use_batchnorm=True, use_dropout=True, dropout_ratio=0.1)
    trainer = Trainer(
        net, *data, epochs=5, mini_batch_size=50, optimizer="Adam",
        optimizer_param={"lr": 0.01}, verbose=False, seed=1,
    )  # fmt: skip
    test_acc = trainer.train()
    assert trainer.max_iter == 30  # 5 epochs of 300 / 50 = 6 steps
    assert len(trainer.train_loss_list) == 30
    assert all(isinstance(v, float) for v in trainer.train_loss_list)
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 5
    assert np.mean(trainer.train_loss_list[-6:]) < 0.5 * np.mean(trainer.train_loss_list[:6])
    assert test_acc == trainer.test_acc > 0.85
    assert isinstance(trainer.optimizer, Adam)


def test_same_seed_same_run_on_every_backend(backend: xprop.Backend, numpy_backend) -> None:
    """Host-drawn batches and masks: float64 losses agree with NumPy's to rounding."""
    options = {"use_batchnorm": True, "use_dropout": True, "weight_decay_lambda": 0.01}
    runs = []
    for be in (backend, numpy_backend):
        trainer = Trainer(
            _net(be, **options), *_data(be), epochs=2, mini_batch_size=30,
            optimizer="momentum", verbose=False, seed=5,
        )  # fmt: skip
        trainer.train()
        runs.append(trainer)
    np.testing.assert_allclose(
        runs[0].train_loss_list, runs[1].train_loss_list, rtol=1e-10, atol=1e-12
    )
    assert runs[0].test_acc_list == runs[1].test_acc_list


def test_evaluation_schedule_is_the_books(numpy_backend) -> None:
    # 300 samples, batches of 100: 3 steps an epoch, evaluations at steps 0, 3 and 6.
    trainer = Trainer(_net(numpy_backend), *_data(numpy_backend), epochs=3, verbose=False)
    trainer.train()
    assert (trainer.max_iter, len(trainer.train_acc_list), trainer.current_epoch) == (9, 3, 3)
    # 250 samples: 2.5 steps an epoch; the book's `i % 2.5 == 0` would only fire at 0.
    x, t, xt, tt = _data(numpy_backend, n_train=250)
    trainer = Trainer(_net(numpy_backend), x, t, xt, tt, epochs=4, verbose=False)
    trainer.train()
    assert (trainer.max_iter, len(trainer.test_acc_list)) == (10, 4)  # at 0, 3, 5, 8


class _Recorder:
    """A network that records what it is asked (for the schedule and sample tests)."""

    def __init__(self, be: xprop.Backend) -> None:
        self.net = _net(be)
        self.params = self.net.params
        self.backend = be
        self.accuracy_sizes: list[int] = []
        self.loss_calls = 0

    def gradient(self, x, t):
        return self.net.gradient(x, t)

    def loss(self, x, t):
        self.loss_calls += 1
        return self.net.loss(x, t)

    def accuracy(self, x, t):
        self.accuracy_sizes.append(x.shape[0])
        return self.net.accuracy(x, t)


def test_evaluates_on_a_sample_and_reuses_the_gradient_loss(numpy_backend) -> None:
    recorder = _Recorder(numpy_backend)
    trainer = Trainer(
        recorder, *_data(numpy_backend), epochs=2, evaluate_sample_num_per_epoch=40,
        verbose=False,
    )  # fmt: skip
    trainer.train()
    assert recorder.accuracy_sizes == [40, 40, 40, 40, 100]  # 2 epochs x (train, test), final
    # No last_loss on this network: the book's loss after each update.
    assert recorder.loss_calls == trainer.max_iter == 6


def test_more_evaluation_samples_than_data_evaluate_all_of_them(backend: xprop.Backend) -> None:
    # 500 asked, 300 training and 100 test samples there: all of them, the run of None
    # (array_api_strict refuses a slice that stops past the end, as the book's x[:500] does).
    runs = []
    for n in (500, None):
        trainer = Trainer(
            _net(backend), *_data(backend), epochs=2, evaluate_sample_num_per_epoch=n,
            verbose=False, seed=1,
        )  # fmt: skip
        trainer.train()
        runs.append((trainer.train_acc_list, trainer.test_acc_list))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 2
    assert all(0.0 < a <= 1.0 for a in runs[0][0])


def test_works_with_two_layer_net(backend32: xprop.Backend) -> None:
    net = TwoLayerNet(10, 8, 3, weight_init_std=0.1, backend=backend32, seed=0)
    trainer = Trainer(
        net, *_data(backend32), epochs=8, optimizer="sgd", optimizer_param={"lr": 0.2},
        verbose=False, seed=0,
    )  # fmt: skip
    assert trainer.train() > 0.8
    assert len(trainer.train_loss_list) == trainer.max_iter


def test_one_device_read_per_epoch(backend32: xprop.Backend, monkeypatch) -> None:
    reads = []
    original = xprop.Backend.to_numpy

    def counting(self, x):
        reads.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(xprop.Backend, "to_numpy", counting)
    trainer = Trainer(
        _net(backend32), *_data(backend32), epochs=3, mini_batch_size=25, verbose=False
    )
    trainer.train()
    # The losses of each epoch in one read (12 a time), at evaluations and at the end.
    assert reads == [(1,), (12,), (12,), (11,)]


def test_progress_lines(numpy_backend, capsys) -> None:
    Trainer(_net(numpy_backend), *_data(numpy_backend), epochs=2, seed=0).train()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert out[0].startswith("=== epoch:1, train loss:")
    assert "train acc:" in out[1]
    assert out[1].endswith(" ===")
    assert out[2] == "=============== Final Test Accuracy ==============="
    assert out[3].startswith("test acc:0.")
    Trainer(_net(numpy_backend), *_data(numpy_backend), epochs=2, verbose=False).train()
    assert capsys.readouterr().out == ""


def test_divergence_is_reported(numpy_backend) -> None:
    trainer = Trainer(
        _net(numpy_backend), *_data(numpy_backend), epochs=3, optimizer="sgd",
        optimizer_param={"lr": 1e30}, verbose=False, seed=0,
    )  # fmt: skip
    with (
        np.errstate(all="ignore"),
        pytest.raises(FloatingPointError, match=r"training diverged: lower the learning rate"),
    ):
        trainer.train()


def test_errors(numpy_backend) -> None:
    data = _data(numpy_backend)
    net = _net(numpy_backend)
    with pytest.raises(TypeError, match="network must have params, gradient, loss and accuracy"):
        Trainer(object(), *data)
    with pytest.raises(ValueError, match="the training data have 300 samples but 299 labels"):
        Trainer(net, data[0], data[1][:299], *data[2:])
    with pytest.raises(ValueError, match="epochs must be an integer of at least 1, got 0"):
        Trainer(net, *data, epochs=0)
    with pytest.raises(TypeError, match=r"mini_batch_size must be an integer, got float 2\.5"):
        Trainer(net, *data, mini_batch_size=2.5)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        Trainer(net, *data, optimizer="lbfgs")
    with pytest.raises(ValueError, match="set them on the object instead"):
        Trainer(net, *data, optimizer=Adam(), optimizer_param={"lr": 0.1})
    assert Trainer(net, *data, optimizer="adam").optimizer.lr == 0.01  # the book's default


# --------------------------------------------------------------------------------------
# max_iter= and report= (what examples/train_mnist.py trains with)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "book-loop"])
def test_max_iter_trains_exactly_that_many_steps(numpy_backend, compiled) -> None:
    def run(**options) -> Trainer:
        trainer = Trainer(
            _net(numpy_backend), *_data(numpy_backend), optimizer="sgd",
            optimizer_param={"lr": 0.1}, verbose=False, seed=3, compiled=compiled, **options,
        )  # fmt: skip
        trainer.train()
        return trainer

    book = run(epochs=4)  # 300 samples, batches of 100: 12 steps, evaluations at 0, 3, 6, 9
    short = run(epochs=4, max_iter=7)  # epochs no longer sets the length
    assert (short.max_iter, short.current_iter, len(short.train_loss_list)) == (7, 7, 7)
    assert short.train_loss_list == book.train_loss_list[:7]  # the same batches, cut short
    assert short.train_acc_list == book.train_acc_list[:3]  # the epochs' schedule: 0, 3, 6
    longer = run(max_iter=14)  # not the default 20 epochs' 60 steps
    assert len(longer.train_loss_list) == 14
    assert len(longer.test_acc_list) == 5  # at 0, 3, 6, 9, 12
    assert longer.train_loss_list[:12] == book.train_loss_list


def test_max_iter_must_be_a_positive_integer(numpy_backend) -> None:
    data = _data(numpy_backend)
    with pytest.raises(ValueError, match="max_iter must be an integer of at least 1, got 0"):
        Trainer(_net(numpy_backend), *data, max_iter=0)
    with pytest.raises(TypeError, match=r"max_iter must be an integer, got float 5\.0"):
        Trainer(_net(numpy_backend), *data, max_iter=5.0)
    with pytest.raises(TypeError, match="report must be callable, got str 'print'"):
        Trainer(_net(numpy_backend), *data, report="print")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "book-loop"])
def test_report_receives_every_evaluation(numpy_backend, compiled, capsys) -> None:
    from xprop.training.trainer import Evaluation

    seen: list[Evaluation] = []

    def report(ev: Evaluation) -> str | None:
        seen.append(ev)
        return None if ev.epoch == 2 and not ev.final else f"row {ev.iteration} {ev.final}"

    x, t, xt, tt = _data(numpy_backend)
    trainer = Trainer(
        _net(numpy_backend), x, t, xt, tt, mini_batch_size=100, optimizer="sgd",
        optimizer_param={"lr": 0.1}, max_iter=8, report=report, seed=0, compiled=compiled,
    )  # fmt: skip
    test_acc = trainer.train()
    # Evaluations after steps 0, 3 and 6 (3 steps an epoch), then the final one after step 7.
    assert [(ev.epoch, ev.iteration, ev.final) for ev in seen] == [
        (1, 0, False), (2, 3, False), (3, 6, False), (3, 7, True),
    ]  # fmt: skip
    assert [ev.train_acc for ev in seen[:3]] == trainer.train_acc_list
    assert [ev.test_acc for ev in seen[:3]] == trainer.test_acc_list
    losses = trainer.train_loss_list
    for ev, (lo, hi) in zip(seen, [(0, 1), (1, 4), (4, 7), (7, 8)], strict=True):
        assert ev.train_loss == pytest.approx(np.mean(losses[lo:hi]), rel=1e-12)
        assert ev.seconds >= 0
    # The final evaluation: all the test data (the returned accuracy), and the training data.
    assert seen[-1].test_acc == test_acc == trainer.network.accuracy(xt, tt)
    assert seen[-1].train_acc == trainer.network.accuracy(x, t)
    # Its lines in place of the book's: None prints nothing, nor does the book's final line.
    assert capsys.readouterr().out.splitlines() == ["row 0 False", "row 6 False", "row 7 True"]


def test_report_without_verbose_prints_nothing_and_can_stop_training(numpy_backend, capsys):
    seen = []

    def stop_at_second(ev) -> str:
        seen.append(ev.iteration)
        if len(seen) == 2:
            raise FloatingPointError(f"stopped at {ev.iteration}")
        return "a line"

    trainer = Trainer(
        _net(numpy_backend), *_data(numpy_backend), epochs=3, report=stop_at_second,
        verbose=False,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="stopped at 3"):
        trainer.train()
    assert seen == [0, 3]
    assert len(trainer.train_loss_list) == 4  # steps 0-3; none after the failed evaluation
    assert trainer.test_acc is None
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------------------
# Interrupted and resumed; data of the wrong kind; the progress bar's clock
# --------------------------------------------------------------------------------------


class _Interrupting(MultiLayerNetExtend):
    """A network whose ``where`` call number ``at`` raises KeyboardInterrupt (Ctrl-C), once."""

    def __init__(self, be: xprop.Backend, where: str = "", at: int = 0) -> None:
        super().__init__(10, [16, 16], 3, backend=be, seed=0)
        self.where, self.at, self.calls = where, at, {"accuracy": 0, "gradient": 0}

    def _tick(self, name: str) -> None:
        self.calls[name] += 1
        if name == self.where and self.calls[name] == self.at:
            raise KeyboardInterrupt

    def accuracy(self, x, t, *args, **kwargs):
        self._tick("accuracy")
        return super().accuracy(x, t, *args, **kwargs)

    def gradient(self, x, t):
        self._tick("gradient")
        return super().gradient(x, t)


def _interrupted_run(be: xprop.Backend, compiled: bool, where: str = "", at: int = 0):
    """2 epochs of 6 steps (max_iter 12) with Adam, Ctrl-C at ``where`` number ``at``, then
    ``train()`` again: the trainer, its network and every evaluation the report saw."""
    net = _Interrupting(be, where, at)
    seen = []

    def report(ev):
        net.calls["report"] = net.calls.get("report", 0) + 1
        if where == "report" and net.calls["report"] == at:
            raise KeyboardInterrupt  # before it reports: the evaluation is still owed
        seen.append(ev)

    trainer = Trainer(
        net, *_data(be), epochs=2, mini_batch_size=50, optimizer="adam", verbose=False,
        seed=2, compiled=compiled, report=report,
    )  # fmt: skip
    if where:
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
    trainer.train()
    return trainer, net, [(ev.epoch, ev.iteration, ev.train_loss, ev.final) for ev in seen]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "book-loop"])
@pytest.mark.parametrize(
    ("where", "at"),
    [
        ("accuracy", 1),  # the first evaluation's training accuracy (after step 0)
        ("accuracy", 4),  # the second evaluation's test accuracy (after step 6)
        ("accuracy", 5),  # the final evaluation's test accuracy
        ("report", 2),  # the report of the second evaluation
        ("gradient", 8),  # the gradient of step 7 (the eager step calls it)
        ("gradient", 5),  # step 4, inside the run of steps 1-6: steps 1-3 are made
    ],
)
def test_interrupted_then_trained_again_gives_every_step_and_evaluation(
    backend: xprop.Backend, compiled, where, at
) -> None:
    if where == "gradient" and compiled and backend.library.step_kind(backend.device) != "eager":
        pytest.skip("a compiled step calls network.gradient once, when it traces it")
    ref, ref_net, ref_seen = _interrupted_run(backend, compiled)
    got, net, seen = _interrupted_run(backend, compiled, where, at)
    assert net.calls[where] > at  # it was interrupted, and went on
    assert got.max_iter == got.current_iter == len(got.train_loss_list) == 12
    assert got.train_loss_list == ref.train_loss_list  # the same 12 minibatches, once each
    assert got.train_acc_list == ref.train_acc_list
    assert len(got.train_acc_list) == 2
    assert got.test_acc_list == ref.test_acc_list
    assert got.test_acc == ref.test_acc
    # Every evaluation reported once, with its mean loss (the losses read before Ctrl-C).
    assert [(*s[:2], s[3]) for s in seen] == [(1, 0, False), (2, 6, False), (2, 11, True)]
    np.testing.assert_equal(seen, ref_seen)
    # 12 Adam steps: a 13th (a step taken twice) would move every parameter.
    for key, value in ref_net.params.items():
        np.testing.assert_array_equal(backend.to_numpy(net.params[key]), backend.to_numpy(value))


def test_data_of_another_kind_are_named(numpy_backend) -> None:
    x, t, xt, tt = _data(numpy_backend)
    net = _net(numpy_backend)
    with pytest.raises(
        TypeError, match=r"got a Python list; convert it first with backend\.asarray"
    ):
        Trainer(net, x.tolist(), t.tolist(), xt, tt)
    # The same library, another device (array-api-strict's second device).
    strict = xprop.get_backend("array_api_strict", dtype="float64")
    device1 = xprop.get_backend("array_api_strict", device="device1", dtype="float64")
    with pytest.raises(
        TypeError,
        match=r"the data are on array_api_strict\.Device\('device1'\) but the network is on "
        r"array_api_strict\.Device\('CPU_DEVICE'\); put them on the network's device",
    ):
        Trainer(_net(strict), *[device1.asarray(a) for a in (x, t, xt, tt)])
    pytest.importorskip("torch")
    torch_backend = xprop.get_backend("torch", dtype="float64")
    data = [torch_backend.asarray(a) for a in (x, t, xt, tt)]
    with pytest.raises(
        TypeError,
        match=r"the data are torch arrays \(torch\.Tensor\) but the network is on numpy; "
        r"convert the data with network\.backend\.asarray.*backend=xprop\.get_backend\('torch'\)",
    ):
        Trainer(net, *data)
    with pytest.raises(TypeError, match="different array libraries were mixed"):
        Trainer(net, x, t, *data[2:])


def test_progress_bar_leaves_the_evaluations_out_of_its_rate(numpy_backend, monkeypatch, capsys):
    tqdm_std = pytest.importorskip("tqdm.std")
    clock = [0.0]  # a clock the steps and evaluations move: 1 s a step, 1000 s an accuracy
    monkeypatch.setattr(tqdm_std, "time", lambda: clock[0])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

    class Slow(_Interrupting):
        def accuracy(self, x, t, *args, **kwargs):
            clock[0] += 1000.0
            return super().accuracy(x, t, *args, **kwargs)

        def gradient(self, x, t):
            clock[0] += 1.0
            return super().gradient(x, t)

    bars = []
    make_bar = Trainer._progress_bar
    monkeypatch.setattr(
        Trainer, "_progress_bar", lambda self: bars.append(make_bar(self)) or bars[-1]
    )
    trainer = Trainer(
        Slow(numpy_backend), *_data(numpy_backend), epochs=2, mini_batch_size=50, compiled=False
    )
    trainer.train()
    assert clock[0] == 12 + 5 * 1000  # 12 steps, 2 x 2 + 1 accuracies
    # The bar starts after the first evaluation (after step 0), at 1 of 12, and its clock
    # stops in the second and the final one: its 11 steps' seconds.
    assert (bars[0].initial, bars[0].n) == (1, 12)
    assert bars[0].format_dict["elapsed"] == 11.0
    # Every state the bar printed: 1 s a step, so the ETA is the steps left.
    states = [s for s in capsys.readouterr().out.split("\r") if "/12 [" in s]
    etas = {int(s.split("/12 [")[0].split()[-1]): s.split("<")[1].split(",")[0] for s in states}
    assert etas == {1: "?", **{n: f"00:{12 - n:02d}" for n in range(2, 13)}}
