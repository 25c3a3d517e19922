"""Checkpoints: saved on one backend, loaded on every other with the same predictions; every
load error leaves the network untouched; an interrupted save keeps the old checkpoint."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import xprop
from xprop import Adam, CheckpointError, MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from xprop.checkpoint import read_metadata

SIZES = (6, [5, 4], 3)
OPTIONS = {"use_batchnorm": True, "use_dropout": True, "dropout_ratio": 0.2}


def _trained(be: xprop.Backend, seed: int = 0, **options) -> tuple:
    """A network with trained parameters and running statistics, and its optimizer."""
    net = MultiLayerNetExtend(*SIZES, **{**OPTIONS, **options}, backend=be, seed=seed)
    rng = np.random.default_rng(seed)
    x = be.asarray(rng.standard_normal((16, SIZES[0])))
    t = be.asarray(rng.integers(0, 3, 16))
    opt = Adam(lr=0.05)
    for _ in range(4):
        opt.update(net.params, net.gradient(x, t))
    return net, opt, x, t


def _snapshot(be: xprop.Backend, net) -> dict:
    arrays = {**net.params, **net.running_stats()}
    return {k: (v, be.to_numpy(v).copy()) for k, v in arrays.items()}


def _assert_unchanged(be: xprop.Backend, net, snapshot: dict) -> None:
    now = {**net.params, **net.running_stats()}
    assert set(now) == set(snapshot)
    for key, (obj, values) in snapshot.items():
        assert now[key] is obj, f"{key} was replaced"
        np.testing.assert_array_equal(be.to_numpy(now[key]), values, err_msg=key)


def test_save_on_one_backend_load_on_every_other(
    backend: xprop.Backend, every_backend64: list[xprop.Backend], tmp_path
) -> None:
    source, _, x, _ = _trained(backend)
    path = tmp_path / "net.safetensors"
    source.save_params(path)
    x_host = backend.to_numpy(x).copy()  # writable (JAX gives read-only views)
    want = backend.to_numpy(source.predict(x))
    saved = {
        k: backend.to_numpy(v) for k, v in {**source.params, **source.running_stats()}.items()
    }
    for target in every_backend64:
        net = MultiLayerNetExtend(*SIZES, **OPTIONS, backend=target, seed=99)
        net.load_params(path)
        for key, value in {**net.params, **net.running_stats()}.items():
            np.testing.assert_array_equal(target.to_numpy(value), saved[key], err_msg=key)
            assert value.dtype == target.dtype
        got = target.to_numpy(net.predict(target.asarray(x_host)))
        # Same numbers in, same maths: equal up to the libraries' matmul rounding.
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=target.name)
        if target.name == backend.name and target.device == backend.device:
            np.testing.assert_array_equal(got, want)


def test_float32_round_trip_and_metadata(backend32: xprop.Backend, tmp_path) -> None:
    net, _, x, _ = _trained(backend32, seed=1)
    path = tmp_path / "net.safetensors"
    net.save_params(path)
    meta = read_metadata(path)
    assert meta["class"] == "MultiLayerNetExtend"
    assert meta["config"] == {
        "input_size": 6,
        "hidden_size_list": [5, 4],
        "output_size": 3,
        "activation": "relu",
        "use_batchnorm": True,
        "use_dropout": True,
        "dropout_ratio": 0.2,
    }
    assert meta["dtype"] == "float32"
    assert meta["backend"] == backend32.name
    assert meta["xprop_version"] == xprop.__version__
    other = MultiLayerNetExtend(*SIZES, **OPTIONS, backend="numpy", seed=5)
    other.load_params(path)
    np.testing.assert_allclose(
        other.predict(backend32.to_numpy(x)), backend32.to_numpy(net.predict(x)), rtol=1e-5
    )


def test_loaded_arrays_can_be_trained_in_place(tmp_path) -> None:
    net, _, x, t = _trained(xprop.get_backend("numpy", dtype="float64"))
    net.save_params(tmp_path / "a.safetensors")
    net.load_params(tmp_path / "a.safetensors")
    assert all(v.flags.writeable for v in net.params.values())
    Adam().update(net.params, net.gradient(x, t))  # in place: needs writable arrays


def test_two_layer_net(backend: xprop.Backend, tmp_path) -> None:
    net = TwoLayerNet(6, 5, 3, backend=backend, seed=0)
    path = tmp_path / "two.safetensors"
    net.save_params(path)
    assert read_metadata(path)["config"] == {"sizes": [6, 5, 3]}
    target = TwoLayerNet(6, 5, 3, backend=xprop.get_backend("numpy", dtype="float64"), seed=1)
    target.load_params(path)
    for key in net.params:
        np.testing.assert_array_equal(target.params[key], backend.to_numpy(net.params[key]))
    wrong = TwoLayerNet(6, 4, 3, backend=xprop.get_backend("numpy", dtype="float64"))
    with pytest.raises(CheckpointError, match=r"sizes is \[6, 5, 3\] in the file but \[6, 4, 3\]"):
        wrong.load_params(path)


def test_optimizer_state_resumes_exactly(tmp_path) -> None:
    be = xprop.get_backend("numpy", dtype="float64")
    a, opt_a, x, t = _trained(be, use_dropout=False)
    path = tmp_path / "resume.safetensors"
    a.save_params(path, optimizer=opt_a)
    b = MultiLayerNetExtend(*SIZES, use_batchnorm=True, backend=be, seed=7)
    opt_b = Adam(lr=0.5)
    b.load_params(path, optimizer=opt_b)
    assert (opt_b.lr, opt_b.iter) == (0.05, 4)
    for _ in range(3):
        opt_a.update(a.params, a.gradient(x, t))
        opt_b.update(b.params, b.gradient(x, t))
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    for key, value in a.running_stats().items():
        np.testing.assert_array_equal(value, b.running_stats()[key])


# -- load errors: each names the problem, and changes nothing --------------------------------


def _rewrite(path: Path, edit) -> None:
    """Rewrite a checkpoint with ``edit(tensors, metadata)`` applied (digest recomputed)."""
    from safetensors import safe_open
    from safetensors.numpy import save

    from xprop.checkpoint import _digest

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    edit(tensors, meta)
    meta["sha256"] = _digest(tensors, meta)
    path.write_bytes(save(tensors, metadata=meta))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _pop(key):
    return lambda tensors, meta: tensors.pop(key)


def _add(key):
    return lambda tensors, meta: tensors.__setitem__(key, np.zeros(3))


def _reshape(key):
    return lambda tensors, meta: tensors.__setitem__(key, np.zeros((2, 2)))


def _retype(key):
    return lambda tensors, meta: tensors.__setitem__(key, tensors[key].astype(np.float32))


def _meta(field, value):
    return lambda tensors, meta: meta.__setitem__(field, value)


def _config(**changes):
    def edit(tensors, meta):
        meta["config"] = json.dumps({**json.loads(meta["config"]), **changes})

    return edit


ERRORS = {
    "missing key": (_pop("W2"), r"lacks network key 'W2'"),
    "missing running statistic": (_pop("running_var1"), r"lacks network key 'running_var1'"),
    "extra key": (_add("W9"), r"has extra network key 'W9'"),
    "shape": (_reshape("b1"), r"'b1' has shape \(2, 2\) in the file but \(5,\) in the network"),
    "dtype": (_retype("gamma2"), r"'gamma2' has dtype float32 in the file but float64 in the"),
    "class": (_meta("class", "MultiLayerNet"), r"holds a MultiLayerNet, not a MultiLayerNetExt"),
    "config": (_config(activation="sigmoid"), r"activation is 'sigmoid' in the file but 'relu'"),
    "sizes": (_config(hidden_size_list=[5, 5]), r"hidden_size_list is \[5, 5\] in the file but"),
    "foreign": (_meta("format", "other"), r"is a safetensors file but not an xprop checkpoint"),
    "version": (_meta("format_version", "3"), r"has format version '3'; this xprop"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_load_errors_leave_the_network_untouched(backend: xprop.Backend, tmp_path, case) -> None:
    be64 = xprop.get_backend("numpy", dtype="float64")
    source, _, _, _ = _trained(be64, seed=2)
    path = tmp_path / "bad.safetensors"
    source.save_params(path)
    edit, message = ERRORS[case]
    _rewrite(path, edit)
    net, _, _, _ = _trained(backend, seed=3)
    before = _snapshot(backend, net)
    with pytest.raises(CheckpointError, match=message):
        net.load_params(path)
    _assert_unchanged(backend, net, before)
    assert isinstance(CheckpointError("x"), ValueError)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_flip_last_byte, r"is corrupt: its arrays and metadata do not match the SHA-256"),
        (lambda p: p.write_bytes(p.read_bytes()[:-7]), r"is corrupt or not a safetensors file"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), r"corrupt or not a safetensors"),
        (lambda p: p.write_bytes(b""), r"is corrupt or not a safetensors file"),
        (
            lambda p: p.write_bytes(struct.pack("<Q", 2) + b"{}"),
            r"not an xprop checkpoint",
        ),
    ],
    ids=["flipped bit", "truncated", "garbage", "empty", "bare safetensors"],
)
def test_corrupt_files(tmp_path, corrupt, message) -> None:
    be = xprop.get_backend("numpy", dtype="float64")
    net, _, _, _ = _trained(be)
    path = tmp_path / "c.safetensors"
    net.save_params(path)
    corrupt(path)
    before = _snapshot(be, net)
    with pytest.raises(CheckpointError, match=message):
        net.load_params(path)
    _assert_unchanged(be, net, before)


def test_optimizer_errors_leave_everything_untouched(tmp_path) -> None:
    be = xprop.get_backend("numpy", dtype="float64")
    net, opt, _, _ = _trained(be)
    plain, with_opt = tmp_path / "plain.safetensors", tmp_path / "opt.safetensors"
    net.save_params(plain)
    net.save_params(with_opt, optimizer=opt)
    target, target_opt, _, _ = _trained(be, seed=4)
    before, opt_before = _snapshot(be, target), target_opt.state_dict()
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        target.load_params(plain, optimizer=target_opt)
    with pytest.raises(CheckpointError, match="holds Adam state, not Momentum"):
        target.load_params(with_opt, optimizer=xprop.Momentum())
    _rewrite(with_opt, _pop("optimizer/v/W1"))
    with pytest.raises(CheckpointError, match=r"bad optimizer state .*v.* has keys"):
        target.load_params(with_opt, optimizer=target_opt)
    _assert_unchanged(be, target, before)
    assert target_opt.iter == opt_before["iter"]
    # state_dict() is a snapshot (copies): the live moments are still those same values.
    np.testing.assert_array_equal(target_opt.state["m"]["W1"], opt_before["slots"]["m"]["W1"])
    # Without optimizer=, the optimizer entries are ignored.
    target.load_params(plain)


def test_missing_files_and_folders(tmp_path) -> None:
    net = MultiLayerNet(4, [3], 2, backend="numpy")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*nope\.safetensors"):
        net.load_params(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        net.save_params(tmp_path / "missing" / "a.safetensors")


# -- atomic save ------------------------------------------------------------------------------


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch) -> None:
    be = xprop.get_backend("numpy", dtype="float64")
    old, _, x, _ = _trained(be, seed=0)
    path = tmp_path / "ckpt.safetensors"
    old.save_params(path)
    old_bytes = path.read_bytes()

    new, _, _, _ = _trained(be, seed=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")  # in the middle: data written, not yet renamed

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save_params(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no leftovers
    fresh = MultiLayerNetExtend(*SIZES, **OPTIONS, backend=be, seed=5)
    fresh.load_params(path)
    np.testing.assert_array_equal(fresh.predict(x), old.predict(x))


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch) -> None:
    be = xprop.get_backend("numpy", dtype="float64")
    net, _, _, _ = _trained(be)
    path = tmp_path / "ckpt.safetensors"
    net.save_params(path)
    old_bytes = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        net.save_params(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert len(list(tmp_path.iterdir())) == 1


def test_saved_file_has_ordinary_permissions(tmp_path) -> None:
    path = tmp_path / "p.safetensors"
    MultiLayerNet(4, [3], 2, backend="numpy").save_params(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_atomically_gives_an_ordinary_file_or_nothing(tmp_path) -> None:
    """The one atomic writer: normal permissions, the old file kept when the write fails."""
    import os
    import stat

    from xprop.files import write_atomically

    target = tmp_path / "out.txt"
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600

    def fails(tmp):
        tmp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, fails)
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# -- round 2: the digest covers the metadata; crafted files; bad paths --------------------------


def _tiny(be: xprop.Backend, seed: int, lr: float = 0.01) -> tuple:
    """A small Dropout network and an Adam that has taken 3 steps (a short header)."""
    net = MultiLayerNetExtend(3, [2], 2, use_dropout=True, backend=be, seed=seed)
    x = be.asarray(np.random.default_rng(seed).standard_normal((4, 3)))
    t = be.asarray(np.array([0, 1, 0, 1]))
    opt = Adam(lr=lr)
    for _ in range(3):
        opt.update(net.params, net.gradient(x, t))
    return net, opt


def _opt_host(be: xprop.Backend, opt) -> tuple:
    state = opt.state_dict()
    slots = {
        f"{slot}/{key}": be.to_numpy(value).copy()
        for slot, arrays in state["slots"].items()
        for key, value in arrays.items()
    }
    return state["class"], state["hyper"], state["iter"], slots


def _net_host(be: xprop.Backend, net) -> dict:
    return {k: be.to_numpy(v).copy() for k, v in net.params.items()}


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_every_header_bit_flip_raises_or_loads_identically(backend: xprop.Backend, tmp_path):
    """Each single-bit flip in the header (array table and metadata: the class, config,
    optimizer hyperparameters and step count, the generator state) raises CheckpointError
    and changes nothing, or loads exactly what was saved.  (Format 1's digest covered the
    arrays only: 22 of these 11,136 flips loaded silently, e.g. lr 0.01 -> 1.01 or 0.11,
    beta2 0.999 -> 0.899, Adam's step 3 -> 2.)"""
    source, source_opt = _tiny(backend, seed=0)
    path = tmp_path / "flip.safetensors"
    source.save_params(path, optimizer=source_opt)
    good = path.read_bytes()
    header_end = 8 + struct.unpack("<Q", good[:8])[0]
    saved_net, saved_opt = _net_host(backend, source), _opt_host(backend, source_opt)
    saved_rng = source.rng.generator.bit_generator.state

    def fresh():
        net, opt = _tiny(backend, seed=1, lr=0.5)
        # What a failed load must leave alone: the very objects (the live state, not the
        # snapshot state_dict() returns), and the numbers.
        objects = (
            dict(net.params),
            {(s, k): a for s, arrays in opt.state.items() for k, a in arrays.items()},
            (opt.hyperparameters(), opt.iter),
            net.rng.generator.bit_generator.state,
        )
        return net, opt, objects, _net_host(backend, net), _opt_host(backend, opt)

    def objects_now(net, opt):
        return (
            dict(net.params),
            {(s, k): a for s, arrays in opt.state.items() for k, a in arrays.items()},
            (opt.hyperparameters(), opt.iter),
            net.rng.generator.bit_generator.state,
        )

    net, opt, objects, net_values, opt_values = fresh()
    raised = loaded = 0
    fd = os.open(path, os.O_RDWR)  # one byte rewritten in place per flip (opening is slow)
    try:
        for bit in range(8 * header_end):
            os.pwrite(fd, bytes([good[bit // 8] ^ (1 << (bit % 8))]), bit // 8)
            try:
                net.load_params(path, optimizer=opt)
            except CheckpointError:
                raised += 1
                now = objects_now(net, opt)
                assert all(now[0][k] is v for k, v in objects[0].items()), f"bit {bit}"
                assert all(now[1][k] is v for k, v in objects[1].items()), f"bit {bit}"
                assert now[2:] == objects[2:], f"bit {bit} changed the optimizer or generator"
                continue
            finally:
                os.pwrite(fd, good[bit // 8 : bit // 8 + 1], bit // 8)
            loaded += 1  # only where the flip does not change what is read
            _assert_same(_net_host(backend, net), saved_net)
            assert _opt_host(backend, opt)[:3] == saved_opt[:3], f"bit {bit} changed the optimizer"
            _assert_same(_opt_host(backend, opt)[3], saved_opt[3])
            assert net.rng.generator.bit_generator.state == saved_rng, f"bit {bit}"
            net, opt, objects, net_values, opt_values = fresh()
    finally:
        os.close(fd)
    assert path.read_bytes() == good
    # The values too, once: nothing was written into the arrays in place.
    _assert_same(_net_host(backend, net), net_values)
    _assert_same(_opt_host(backend, opt)[3], opt_values[3])
    assert raised > 0.9 * 8 * header_end  # almost every flip is caught, not loaded
    assert raised + loaded == 8 * header_end


def test_format_1_checkpoints_still_load(backend: xprop.Backend, tmp_path) -> None:
    """Files of the previous format (digest over the arrays only) load as before."""
    from safetensors import safe_open
    from safetensors.numpy import save

    from xprop.checkpoint import _digest

    source, source_opt = _tiny(backend, seed=0)
    path = tmp_path / "v1.safetensors"
    source.save_params(path, optimizer=source_opt)
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.pop("rng")
    meta["format_version"] = "1"
    meta["sha256"] = _digest(tensors)  # format 1: the arrays only
    path.write_bytes(save(tensors, metadata=meta))
    net, opt = _tiny(backend, seed=1, lr=0.5)
    net.load_params(path, optimizer=opt)
    _assert_same(_net_host(backend, net), _net_host(backend, source))
    assert (opt.lr, opt.iter) == (0.01, 3)


CRAFTED = {
    "config a list": (_meta("config", "[1, 2]"), r"'config' must be a JSON object, got list"),
    "config a number": (_meta("config", "5"), r"'config' must be a JSON object, got int"),
    "config nested": (_meta("config", "[" * 100_000 + "]" * 100_000), r"'config' is nested"),
    "info a string": (_meta("info", '"x"'), r"'info' must be a JSON object, got str"),
    "optimizer a list": (_meta("optimizer", "[1]"), r"'optimizer' must be a JSON object"),
    "optimizer hyper a list": (
        _meta("optimizer", '{"class": "Adam", "hyper": [1], "iter": 3}'),
        r"optimizer 'hyper' must be a JSON object",
    ),
    "optimizer iter a string": (
        _meta("optimizer", '{"class": "Adam", "hyper": {}, "iter": "3"}'),
        r"optimizer 'iter' must be an integer",
    ),
    "rng a list": (_meta("rng", "[]"), r"'rng' must be a JSON object, got list"),
    "rng of another generator": (
        _meta("rng", '{"bit_generator": "MT19937", "state": {}}'),
        r"generator state is for 'MT19937', not PCG64",
    ),
    "bad json": (_meta("config", "{"), r"'config' is not valid JSON"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_metadata_raises_checkpoint_error(backend: xprop.Backend, tmp_path, case) -> None:
    source, source_opt = _tiny(xprop.get_backend("numpy", dtype="float64"), seed=0)
    path = tmp_path / "crafted.safetensors"
    source.save_params(path, optimizer=source_opt)
    edit, message = CRAFTED[case]
    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=message):
        read_metadata(path)
    net, opt = _tiny(backend, seed=1, lr=0.5)
    net_before, opt_before = _net_host(backend, net), _opt_host(backend, opt)
    with pytest.raises(CheckpointError, match=message):
        net.load_params(path, optimizer=opt)
    _assert_same(_net_host(backend, net), net_before)
    assert _opt_host(backend, opt)[:3] == opt_before[:3]


def test_optimizer_of_another_network_is_refused_at_save(backend: xprop.Backend, tmp_path):
    net_a, opt_a = _tiny(backend, seed=0)
    net_b = MultiLayerNetExtend(3, [4], 2, use_dropout=True, backend=backend, seed=0)
    path = tmp_path / "b.safetensors"
    with pytest.raises(ValueError, match=r"optimizer's 'm' state for 'W1' has shape \(3, 2\)"):
        net_b.save_params(path, optimizer=opt_a)
    assert not path.exists()
    other = MultiLayerNetExtend(3, [2], 2, use_batchnorm=True, backend=backend, seed=0)
    with pytest.raises(ValueError, match=r"'m' state has keys \['W1', .*\] but the network"):
        other.save_params(path, optimizer=opt_a)
    assert not path.exists()
    with pytest.raises(TypeError, match="optimizer must be an xprop optimizer"):
        net_a.save_params(path, optimizer="adam")
    net_a.save_params(path, optimizer=opt_a)  # its own optimizer: fine


def test_dropout_run_resumes_exactly(backend: xprop.Backend, tmp_path) -> None:
    """The Dropout masks come from the network's generator; its state is in the file, so
    training continues with the masks the uninterrupted run draws (eager and compiled)."""
    a, opt_a = _tiny(backend, seed=0)
    path = tmp_path / "resume.safetensors"
    a.save_params(path, optimizer=opt_a)
    b, opt_b = _tiny(backend, seed=5, lr=0.5)
    b.load_params(path, optimizer=opt_b)
    x = backend.asarray(np.random.default_rng(9).standard_normal((4, 3)))
    t = backend.asarray(np.array([1, 0, 1, 1]))
    for _ in range(3):
        opt_a.update(a.params, a.gradient(x, t))
        opt_b.update(b.params, b.gradient(x, t))
    _assert_same(_net_host(backend, a), _net_host(backend, b))
    assert float(a.loss(x, t, train_flg=True)) == float(b.loss(x, t, train_flg=True))
    # Save mid-run again and go on with compiled steps (keys drawn from the generator).
    a.save_params(path, optimizer=opt_a)
    c, opt_c = _tiny(backend, seed=6, lr=0.5)
    c.load_params(path, optimizer=opt_c)
    idx = backend.rng(3).choice(4, (5, 4))
    want = a.compile_step(opt_a).run(x, t, idx)
    got = c.compile_step(opt_c).run(x, t, idx)
    np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))
    _assert_same(_net_host(backend, a), _net_host(backend, c))


def test_load_from_a_folder_or_a_fifo_says_what_it_is(tmp_path) -> None:
    net = MultiLayerNet(4, [3], 2, backend="numpy")
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a checkpoint file"):
        net.load_params(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(CheckpointError, match=r"is not a regular file \(a FIFO\)"):
            net.load_params(tmp_path / "fifo")


def test_save_to_a_folder_or_an_empty_path_is_refused(tmp_path, monkeypatch) -> None:
    net = MultiLayerNet(4, [3], 2, backend="numpy")
    with pytest.raises(IsADirectoryError, match=r"cannot write .*: it is a folder"):
        net.save_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"the path is empty"):
        net.save_params("")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX links, FIFOs and modes")
def test_save_through_a_link_keeps_the_mode_and_never_replaces_a_device(tmp_path) -> None:
    """Before: the link became a regular file (its target kept the old weights), a 0600
    checkpoint became 0644, and a FIFO (or /dev/null, as root) was replaced."""
    be = xprop.get_backend("numpy", dtype="float64")
    old, new = MultiLayerNet(4, [3], 2, backend=be, seed=0), MultiLayerNet(4, [3], 2, backend=be)
    real, link = tmp_path / "real.safetensors", tmp_path / "link.safetensors"
    old.save_params(real)
    real.chmod(0o600)
    link.symlink_to(real.name)
    new.save_params(link)
    assert link.is_symlink()
    assert oct(real.stat().st_mode & 0o777) == oct(0o600)
    check = MultiLayerNet(4, [3], 2, backend=be, seed=3)
    check.load_params(real)
    for key, value in new.params.items():
        np.testing.assert_array_equal(check.params[key], value)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"it exists and is a FIFO, not a regular file"):
        new.save_params(fifo)
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    with pytest.raises(ValueError, match=r"-> /dev/null: it exists and is a character device"):
        new.save_params(null)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fifo",
        "link.safetensors",
        "null",
        "real.safetensors",
    ]
