"""xprop.distributed on two ranks: gradient averages, broadcasts, shards, sharded accuracy.

Run with ``mpiexec -n 2 python -m pytest tests/mpi`` (``nox -s mpi``); see conftest.py.
Every value is chosen so that the exact answer is known (sums of small integers times
powers of two), so the comparisons are exact, in float32 as in float64.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
from array_api_compat import device as device_of

import xprop
from xprop.distributed import DistributedError


def host_grads(rank: int, dtype: str = "float64") -> dict[str, np.ndarray]:
    """Gradients that differ by rank: rank r holds (r + 1) times a fixed pattern."""
    w = np.arange(12, dtype=dtype).reshape(3, 4) - 5
    b = np.array([0.5, -1.0, 2.0, 4.0], dtype=dtype)
    return {"W": w * (rank + 1), "b": b * (rank + 1)}


def expected_mean(dtype: str = "float64") -> dict[str, np.ndarray]:
    both = [host_grads(r, dtype) for r in (0, 1)]
    return {k: (both[0][k] + both[1][k]) / 2 for k in both[0]}


def test_average_gradients_is_the_mean_over_ranks(dp, backend):
    check_average(dp, backend)


def test_average_gradients_in_float32(dp, backend32):
    check_average(dp, backend32)


def check_average(dp, backend):
    dtype = backend.dtype_name
    grads = {k: backend.asarray(v) for k, v in host_grads(dp.rank, dtype).items()}
    before = dict(grads)
    out = dp.average_gradients(grads)
    want = expected_mean(dtype)
    for key, value in out.items():
        np.testing.assert_array_equal(backend.to_numpy(value), want[key])
        assert value.dtype == backend.dtype
        assert device_of(value) == backend.device  # device1 stays device1
    if backend.name == "jax":  # immutable: a new dict, the input untouched
        assert out is not grads
        for key, value in grads.items():
            np.testing.assert_array_equal(backend.to_numpy(value), host_grads(dp.rank, dtype)[key])
    else:  # in place: the same dict, the same arrays
        assert out is grads
        assert all(out[k] is before[k] for k in before)


def test_average_gradients_again_reuses_the_buffer_and_stays_right(dp, backend):
    for step in range(3):
        grads = {k: backend.asarray(v * (step + 1)) for k, v in host_grads(dp.rank).items()}
        out = dp.average_gradients(grads)
        for key, value in expected_mean().items():
            np.testing.assert_array_equal(backend.to_numpy(out[key]), value * (step + 1))
    assert len(dp._buffers) == 1  # one buffer, filled again each step


def test_average_gradients_of_two_dtypes_and_any_key_order(dp):
    be64 = xprop.get_backend("numpy", dtype="float64")
    be32 = xprop.get_backend("numpy", dtype="float32")
    grads = {
        "W": be64.asarray(host_grads(dp.rank)["W"]),
        "b": be32.asarray(host_grads(dp.rank, "float32")["b"]),
    }
    if dp.rank == 1:  # the same keys inserted in another order
        grads = {"b": grads["b"], "W": grads["W"]}
    out = dp.average_gradients(grads)
    np.testing.assert_array_equal(out["W"], expected_mean()["W"])
    np.testing.assert_array_equal(out["b"], expected_mean("float32")["b"])
    assert out["b"].dtype == np.float32


def test_broadcast_params_makes_every_rank_start_from_rank_0(dp, backend):
    net = xprop.TwoLayerNet(5, 4, 3, backend=backend, seed=dp.rank)  # different weights
    reference = xprop.TwoLayerNet(5, 4, 3, backend=backend, seed=0)  # rank 0's
    net.params["b1"] = backend.asarray(np.full(4, float(dp.rank + 1)))
    reference.params["b1"] = backend.asarray(np.ones(4))
    arrays = dict(net.params)
    assert dp.broadcast_params(net.params) is net.params
    for key, value in net.params.items():
        want = np.ones(4) if key == "b1" else backend.to_numpy(reference.params[key])
        np.testing.assert_array_equal(backend.to_numpy(value), want)
        assert device_of(value) == backend.device
        if backend.name != "jax":
            assert value is arrays[key]  # written in place
    # The layers read the dict: the network now predicts as rank 0's.
    x = backend.asarray(np.linspace(-1, 1, 10).reshape(2, 5))
    np.testing.assert_array_equal(
        backend.to_numpy(net.predict(x)), backend.to_numpy(reference.predict(x))
    )


def test_broadcast_from_another_root(dp):
    params = {"w": np.full(3, float(dp.rank))}
    dp.broadcast_params(params, root=1)
    np.testing.assert_array_equal(params["w"], [1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("keys", "rank 1 has keys ['W', 'b', 'c'] where rank 0 has ['W', 'b']"),
        ("shapes", "rank 1 has W (3, 5) float64 where rank 0 has W (3, 4) float64"),
        ("dtypes", "rank 1 has b (4,) float32 where rank 0 has b (4,) float64"),
    ],
)
def test_ranks_that_disagree_raise_on_every_rank(dp, change, message):
    grads = host_grads(dp.rank)
    if dp.rank == 1:
        if change == "keys":
            grads["c"] = np.zeros(2)
        elif change == "shapes":
            grads["W"] = np.zeros((3, 5))
        else:
            grads["b"] = grads["b"].astype(np.float32)
    with pytest.raises(DistributedError, match="the ranks disagree on the gradients") as info:
        dp.average_gradients(grads)
    assert message in str(info.value)
    with pytest.raises(DistributedError, match="disagree on the parameters"):
        dp.broadcast_params(grads)


def test_a_layout_change_after_the_agreement_raises(dp):
    dp.average_gradients(host_grads(dp.rank))
    changed = host_grads(dp.rank)
    changed["W"] = np.zeros((2, 2))  # on both ranks, so neither waits for the other
    with pytest.raises(DistributedError, match="changed after the ranks agreed"):
        dp.average_gradients(changed)


def test_shard_gives_each_rank_its_contiguous_slice(dp, backend):
    indices = backend.asarray(np.arange(8))
    np.testing.assert_array_equal(backend.to_numpy(dp.shard(indices)), np.arange(4) + 4 * dp.rank)
    epoch = backend.asarray(np.arange(24).reshape(3, 8))  # k steps at once
    np.testing.assert_array_equal(
        backend.to_numpy(dp.shard(epoch)), np.arange(24).reshape(3, 8)[:, 4 * dp.rank :][:, :4]
    )
    with pytest.raises(DistributedError, match=r"7 samples does not divide evenly among 2"):
        dp.shard(backend.asarray(np.arange(7)))


def test_rows_and_local_ranks(dp):
    assert dp.rows(5) == [(0, 2), (2, 5)][dp.rank]
    assert (dp.local_rank, dp.local_size) == (dp.rank, 2)  # one machine
    np.testing.assert_array_equal(dp.average([dp.rank, 2.0 * dp.rank]), [0.5, 1.0])


def _test_data(backend: xprop.Backend) -> tuple[object, object]:
    folder = os.environ.get("XPROP_DATA_DIR")
    if folder:
        _, (x, t) = xprop.load_mnist(data_dir=folder, backend=backend)
        return x[:9999, ...], t[:9999]  # an odd count: the ranks' shares differ by one
    rng = np.random.default_rng(5)  # images whose class a linear map decides: learnable
    x = rng.random((1001, 784))
    t = np.argmax(x @ rng.standard_normal((784, 10)), axis=1)
    return backend.asarray(x), backend.asarray(t)


def test_sharded_accuracy_equals_unsharded(dp, backend32):
    x, t = _test_data(backend32)
    net = xprop.TwoLayerNet(784, 30, 10, backend=backend32, seed=0, weight_init_std="he")
    # A few steps so that the accuracy is neither chance nor the same for every sample.
    step = net.compile_step(0.1)
    for i in range(20):
        sl = slice(50 * i, 50 * i + 50)
        step(x[sl, ...], t[sl])
    whole = net.accuracy(x, t)
    assert dp.accuracy(net, x, t) == whole
    assert 0.15 < whole < 1.0
    assert dp.accuracy(net, x[:1, ...], t[:1]) == net.accuracy(x[:1, ...], t[:1])  # rank 0 only


# --------------------------------------------------------------------------------------
# The chapter-6 Trainer, data parallel
# --------------------------------------------------------------------------------------


def _trainer_data(backend: xprop.Backend) -> tuple[object, ...]:
    rng = np.random.default_rng(7)
    x = rng.random((400, 20))
    t = np.argmax(x @ rng.standard_normal((20, 4)), axis=1)
    return tuple(backend.asarray(a) for a in (x[:300], t[:300], x[300:], t[300:]))


def _trainer(backend, comm, *, batchnorm=False, optimizer="adam"):
    net = xprop.MultiLayerNetExtend(
        20, [16, 16], 4, use_batchnorm=batchnorm, backend=backend, seed=3
    )
    trainer = xprop.Trainer(
        net, *_trainer_data(backend), epochs=3, mini_batch_size=50, optimizer=optimizer,
        optimizer_param={"lr": 0.01}, verbose=False, seed=4, comm=comm,
    )  # fmt: skip
    trainer.train()
    return net, trainer


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_trainer_on_two_ranks_trains_as_one(dp, backend, optimizer):
    net, trainer = _trainer(backend, dp, optimizer=optimizer)
    ref_net, ref = _trainer(backend, None, optimizer=optimizer)  # one process, this rank
    for key, value in ref_net.params.items():
        got, want = backend.to_numpy(net.params[key]), backend.to_numpy(value)
        assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want)), key
    np.testing.assert_allclose(trainer.train_loss_list, ref.train_loss_list, rtol=1e-12)
    assert trainer.train_acc_list == ref.train_acc_list
    assert trainer.test_acc == ref.test_acc
    assert trainer.test_acc > 0.5
    assert not trainer.verbose or dp.rank == 0


def test_trainer_with_batchnorm_keeps_the_ranks_identical(dp, backend):
    net, trainer = _trainer(backend, dp.comm, batchnorm=True)
    mine = {k: backend.to_numpy(v) for k, v in {**net.params, **net.running_stats()}.items()}
    theirs = dp.comm.allgather(mine)
    for key, value in mine.items():
        np.testing.assert_array_equal(theirs[0][key], value)
    assert trainer.test_acc > 0.5


def test_trainer_batch_must_divide_among_the_ranks(dp):
    backend = xprop.get_backend("numpy")
    net = xprop.MultiLayerNet(20, [8], 4, backend=backend, seed=0)
    with pytest.raises(DistributedError, match="51 samples does not divide evenly among 2"):
        xprop.Trainer(net, *_trainer_data(backend), mini_batch_size=51, comm=dp)


def test_sharded_accuracy_of_different_sample_counts_raises_on_every_rank(dp, backend):
    x, t = _test_data(backend)
    net = xprop.TwoLayerNet(784, 30, 10, backend=backend, seed=0)
    n = 100 + 20 * dp.rank  # rank 1 passes more: its share would be counted against 100
    with pytest.raises(
        DistributedError,
        match=r"accuracy: the ranks passed different numbers of "
        r"samples \(100 on rank 0, 120 on rank 1\); every rank passes the same",
    ):
        dp.accuracy(net, x[:n, ...], t[:n])
    with pytest.raises(ValueError, match="accuracy of an empty batch"):  # on every rank
        dp.accuracy(net, x[:0, ...], t[:0])


# (what differs, rank 1's arguments in place of rank 0's, the message's part)
TRAINER_DIFFERENCES = [
    ("train size", {"train": 200}, "training samples: 300 on rank 0, 200 on rank 1"),
    ("test size", {"test": 60}, "test samples: 100 on rank 0, 60 on rank 1"),
    ("epochs", {"epochs": 2}, "epochs: 3 on rank 0, 2 on rank 1"),
    ("batch", {"mini_batch_size": 100}, "mini_batch_size: 50 on rank 0, 100 on rank 1"),
    ("odd batch", {"mini_batch_size": 51}, "mini_batch_size: 50 on rank 0, 51 on rank 1"),
    ("max_iter", {"max_iter": 7}, "max_iter: 18 on rank 0, 7 on rank 1"),
    ("samples", {"evaluate_sample_num_per_epoch": 40},
     "evaluate_sample_num_per_epoch: None on rank 0, 40 on rank 1"),
    ("report", {"report": lambda ev: None}, "report: None on rank 0, 'given' on rank 1"),
    ("seed", {"seed": 5}, "seed: 4 on rank 0, 5 on rank 1"),
    ("no seed", {"seed": None}, "seed: 4 on rank 0, None on rank 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [d[1:] for d in TRAINER_DIFFERENCES],
    ids=[d[0] for d in TRAINER_DIFFERENCES],
)
def test_trainer_settings_that_differ_raise_on_every_rank(dp, backend, change, message):
    # One shard of the data per rank, or another setting on one rank's command line: the
    # ranks would run different numbers of collectives and wait for each other forever.
    x, t, xt, tt = _trainer_data(backend)
    options = {"epochs": 3, "mini_batch_size": 50, "seed": 4}
    if dp.rank == 1:
        options.update(change)
    n_train, n_test = options.pop("train", 300), options.pop("test", 100)
    x, t, xt, tt = x[:n_train, ...], t[:n_train], xt[:n_test, ...], tt[:n_test]
    net = xprop.MultiLayerNetExtend(20, [16], 4, backend=backend, seed=3)
    with pytest.raises(
        DistributedError, match="the ranks disagree on the Trainer's settings"
    ) as info:
        xprop.Trainer(net, x, t, xt, tt, verbose=False, comm=dp, **options)
    assert message in str(info.value)
    assert "a shard of the data per rank does not work" in str(info.value)


def test_trainer_without_a_seed_draws_rank_0s_indices_on_every_rank(dp, backend):
    # Each rank computes its slice of the same global minibatch: unseeded generators would
    # give every rank other indices, and the run would silently not be the global batch's.
    x, t, xt, tt = _trainer_data(backend)
    net = xprop.MultiLayerNetExtend(20, [16], 4, backend=backend, seed=3)
    trainer = xprop.Trainer(
        net, x, t, xt, tt, verbose=False, epochs=1, mini_batch_size=50, comm=dp
    )
    drawn = [int(i) for i in trainer._rng.generator.integers(0, 1 << 30, size=8)]
    everyone = dp.comm.allgather(drawn)
    assert everyone[0] == everyone[1]
    assert len(set(dp.comm.allgather(secrets.randbits(63)))) == 2  # the ranks' own draws differ


def test_ranks_on_one_node_turn_jax_preallocation_off(monkeypatch):
    from xprop.distributed import DataParallel

    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    dp = DataParallel()  # both ranks: making one is a collective
    assert dp.local_size == 2  # mpiexec -n 2 on one machine
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # a user's choice wins
    DataParallel()
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_trainer_refuses_one_sample_per_rank_with_batch_norm_on_every_rank(dp, backend):
    # mini_batch_size=2 on 2 ranks: each rank's BatchNorm would see one sample (variance 0,
    # output beta); every rank raises, none is left waiting.
    x, t, xt, tt = _trainer_data(backend)
    net = xprop.MultiLayerNetExtend(20, [16], 4, backend=backend, seed=3, use_batchnorm=True)
    with pytest.raises(ValueError, match=r"batches of 1 sample \(2 over the ranks\)"):
        xprop.Trainer(net, x, t, xt, tt, verbose=False, mini_batch_size=2, seed=4, comm=dp)


def _convnet(backend, conv):
    return xprop.SimpleConvNet((1, 12, 12), conv, hidden_size=8, output_size=4, backend=backend)


# (what differs, build rank 1's network and Trainer options, the message's part): settings
# that change no collective and no parameter shape, but the arithmetic: the ranks would
# train a hybrid without a word.
ARITHMETIC_DIFFERENCES = [
    ("lr", lambda be: (xprop.MultiLayerNet(20, [16], 4, backend=be, seed=3),
                       {"optimizer": "sgd", "optimizer_param": {"lr": 0.02}}),
     "optimizer: ['SGD', {'lr': 0.01}] on rank 0, ['SGD', {'lr': 0.02}] on rank 1"),
    ("optimizer", lambda be: (xprop.MultiLayerNet(20, [16], 4, backend=be, seed=3),
                              {"optimizer": "momentum"}),
     "optimizer: ['SGD', {'lr': 0.01}] on rank 0, ['Momentum', {'lr': 0.01, 'momentum': 0.9}]"),
    ("weight decay", lambda be: (
        xprop.MultiLayerNet(20, [16], 4, weight_decay_lambda=0.1, backend=be, seed=3), {}),
     "weight_decay_lambda"),
    ("conv_param", lambda be: (_convnet(be, {"filter_num": 3, "filter_size": 3, "pad": 1,
                                             "stride": 3}), {}),
     "'pad': 1, 'stride': 3"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rank1", "message"),
    [d[1:] for d in ARITHMETIC_DIFFERENCES],
    ids=[d[0] for d in ARITHMETIC_DIFFERENCES],
)
def test_trainer_settings_of_the_arithmetic_that_differ_raise_on_every_rank(
    dp, backend, rank1, message
):
    x, t, xt, tt = _trainer_data(backend)
    if "conv" in message or "pad" in message:
        x, xt = (
            backend.asarray(np.resize(backend.to_numpy(a), (a.shape[0], 1, 12, 12)))
            for a in (x, xt)
        )
        net = _convnet(backend, {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 2})
        options = {}
    else:
        net, options = (
            xprop.MultiLayerNet(20, [16], 4, backend=backend, seed=3),
            {"optimizer": "sgd"},
        )
    if dp.rank == 1:
        net, options = rank1(backend)
    with pytest.raises(DistributedError, match="the ranks disagree on the") as info:
        xprop.Trainer(net, x, t, xt, tt, verbose=False, seed=4, comm=dp, **options)
    assert message in str(info.value)
    assert "on rank 0" in str(info.value)
    assert "on rank 1" in str(info.value)
