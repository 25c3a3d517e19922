"""xprop.distributed: the library hooks, one process, and runs on 1 and 2 MPI ranks.

The flat-buffer hooks (``ArrayLibrary.pack``/``unpack``) and the single-process behaviour
are tested in this process.  Multi-rank runs are subprocesses (``mpiexec -n 2 python ...``)
with a timeout, so that a hang is a failure: 1 rank against 2 ranks after 50 steps (float64
within 1e-12, float32 within 1e-5, on numpy, array_api_strict, torch and jax), the example
script against its single-process run, and every error case (exit status non-zero, the
message on stderr).  They skip without mpi4py and mpiexec, unless ``XPROP_REQUIRE_MPI=1``
(``nox -s mpi``), where that is a failure.  The collectives themselves are tested on two
ranks in ``tests/mpi``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import device as device_of

import xprop
from xprop import distributed
from xprop.distributed import DataParallel, DistributedError, device_for_local_rank

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi" / "train_worker.py"
EXAMPLE = ROOT / "examples" / "train_mnist.py"
# A hang must fail the test, not the session: seconds for the error cases, more for runs.
ERROR_TIMEOUT = 60
RUN_TIMEOUT = 300


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the venv's, from the mpich wheel
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _require_mpi() -> str:
    """The mpiexec to launch with, or a skip that names what is missing."""
    missing = []
    if importlib.util.find_spec("mpi4py") is None:
        missing.append("mpi4py")
    mpiexec = _mpiexec()
    if mpiexec is None:
        missing.append("mpiexec")
    if missing:
        why = f"{' and '.join(missing)} not installed: pip install 'xprop[mpi]'"
        if os.environ.get("XPROP_REQUIRE_MPI") == "1":
            pytest.fail(f"XPROP_REQUIRE_MPI=1 but {why}")
        pytest.skip(why)
    return mpiexec


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # the ranks share the cores
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # ranks may share one GPU
    env.pop("XPROP_BACKEND", None)  # the workers name their backends
    env.update(extra)
    return env


def mpirun(n: int | list[list[str]], *args: str, timeout: float = RUN_TIMEOUT, **env: str):
    """``mpiexec -n N python ARGS`` (or MPMD: one argument list per rank); never raises on rc.

    A run that outlives ``timeout`` fails the test: that is a hang.
    """
    mpiexec = _require_mpi()
    if isinstance(n, int):
        command = [mpiexec, "-n", str(n), sys.executable, *args]
    else:  # mpiexec -n 1 python A : -n 1 python B
        command = [mpiexec]
        for i, rank_args in enumerate(n):
            command += ([":"] if i else []) + ["-n", "1", sys.executable, *rank_args]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=_env(**env), check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(command)} hung: still running after {timeout} s\n{exc.stderr}")


# --------------------------------------------------------------------------------------
# The library hooks: one flat buffer, and back (no MPI needed)
# --------------------------------------------------------------------------------------


def _arrays(backend: xprop.Backend) -> tuple[list[object], np.ndarray]:
    host = [np.arange(6.0).reshape(2, 3), np.array([-1.5, 2.5]), np.array(7.0)]
    return [backend.asarray(h) for h in host], np.concatenate([h.reshape(-1) for h in host])


def test_pack_lays_arrays_out_one_after_the_other(backend32):
    lib = backend32.library
    arrays, flat = _arrays(backend32)
    buffer = lib.pack(arrays)
    assert isinstance(buffer, np.ndarray)
    assert buffer.flags.c_contiguous
    assert buffer.dtype == np.float32
    np.testing.assert_array_equal(buffer, flat)
    again = lib.pack([a * 2 for a in arrays], buffer)  # reuse: filled in place
    assert np.shares_memory(again, buffer)
    np.testing.assert_array_equal(again, 2 * flat)


def test_unpack_writes_back_in_place_or_returns_new_arrays(backend):
    lib = backend.library
    arrays, flat = _arrays(backend)
    buffer = lib.pack(arrays)
    buffer *= -1.0
    out = lib.unpack(buffer, arrays)
    buffer[...] = 99.0  # the buffer is reused afterwards: nothing may share it
    offset = 0
    for a, o in zip(arrays, out, strict=True):
        n = int(np.prod(a.shape))
        np.testing.assert_array_equal(
            backend.to_numpy(o), -flat[offset : offset + n].reshape(tuple(a.shape))
        )
        assert tuple(o.shape) == tuple(a.shape)
        assert o.dtype == a.dtype
        assert device_of(o) == backend.device
        if backend.name == "jax":  # immutable: new arrays, the old ones untouched
            assert o is not a
            np.testing.assert_array_equal(
                backend.to_numpy(a).reshape(-1), flat[offset : offset + n]
            )
        else:
            assert o is a
        offset += n


def test_device_for_local_rank_takes_one_device_per_rank():
    assert [device_for_local_rank(r, ["g0", "g1"]) for r in range(4)] == ["g0", "g1"] * 2
    with pytest.raises(ValueError, match="no accelerator"):
        device_for_local_rank(0, [])


def test_ranks_sharing_a_node_turn_jax_preallocation_off(monkeypatch):
    from xprop.distributed.placement import ENV_JAX_PREALLOCATE, share_accelerators

    monkeypatch.delenv(ENV_JAX_PREALLOCATE, raising=False)
    share_accelerators(1)  # one rank on the node: JAX may take the GPU
    assert ENV_JAX_PREALLOCATE not in os.environ
    share_accelerators(2)
    assert os.environ[ENV_JAX_PREALLOCATE] == "false"
    monkeypatch.setenv(ENV_JAX_PREALLOCATE, "true")  # the user's explicit setting wins
    share_accelerators(2)
    assert os.environ[ENV_JAX_PREALLOCATE] == "true"


def test_cuda_awareness_can_be_stated(monkeypatch):
    monkeypatch.setenv("XPROP_MPI_CUDA_AWARE", "1")
    assert distributed.mpi_is_cuda_aware()
    monkeypatch.setenv("XPROP_MPI_CUDA_AWARE", "0")
    assert not distributed.mpi_is_cuda_aware()
    monkeypatch.setenv("XPROP_MPI_CUDA_AWARE", "yes")
    with pytest.raises(DistributedError, match="must be 0 or 1"):
        distributed.mpi_is_cuda_aware()


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    with pytest.raises(DistributedError, match=r"needs MPI.*pip install 'xprop\[mpi\]'"):
        DataParallel()


def test_data_parallel_script_without_mpi4py_names_the_extra(tmp_path):
    # A sitecustomize that hides mpi4py, as on a machine without it.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['mpi4py'] = None\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data-parallel", "--iters", "1"],
        capture_output=True,
        text=True,
        timeout=ERROR_TIMEOUT,
        env=_env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'xprop[mpi]'" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------
# One process: every collective is skipped, nothing changes
# --------------------------------------------------------------------------------------


@pytest.fixture
def single():
    _require_mpi()
    from mpi4py import MPI

    return DataParallel(MPI.COMM_SELF)


def test_one_rank_is_single_process_training(single, backend):
    assert (single.rank, single.size, single.is_root) == (0, 1, True)
    grads = {"W": backend.asarray(np.ones((2, 2))), "b": backend.zeros(2)}
    before = {k: backend.to_numpy(v) for k, v in grads.items()}
    assert single.average_gradients(grads) is grads
    for key, value in grads.items():
        np.testing.assert_array_equal(backend.to_numpy(value), before[key])
    idx = backend.asarray(np.arange(7))
    np.testing.assert_array_equal(backend.to_numpy(single.shard(idx)), np.arange(7))
    assert single.rows(7) == (0, 7)
    np.testing.assert_array_equal(single.average([1.5, 2.0]), [1.5, 2.0])


def test_one_rank_accuracy_is_the_networks(single, backend32):
    rng = np.random.default_rng(0)
    x = backend32.asarray(rng.random((37, 6)))
    t = backend32.asarray(rng.integers(0, 3, 37))
    net = xprop.TwoLayerNet(6, 5, 3, backend=backend32, seed=1, weight_init_std=1.0)
    assert single.accuracy(net, x, t) == net.accuracy(x, t)
    with pytest.raises(ValueError, match="empty batch"):
        single.accuracy(net, x[:0, ...], t[:0])


def test_bad_arguments_are_named(single):
    with pytest.raises(TypeError, match="intra-communicator"):
        DataParallel("COMM_WORLD")
    with pytest.raises(ValueError, match=r"root must be a rank in 0\.\.0, got 1"):
        single.broadcast_params({"w": np.zeros(2)}, root=1)
    with pytest.raises(TypeError, match="expected a dict of arrays"):
        single.average_gradients([np.zeros(2)])
    with pytest.raises(TypeError, match=r"entry 'w' must be an array"):
        single.average_gradients({"w": [1.0, 2.0]})


# --------------------------------------------------------------------------------------
# 1 rank against 2 ranks: the same training, up to rounding
# --------------------------------------------------------------------------------------

BACKENDS = ["numpy", "array_api_strict", "torch", "jax"]
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, dict[str, np.ndarray]]:
    """50 steps of 784-100-10 at global batch 256 on 1 and on 2 ranks, every backend here."""
    names = [n for n in BACKENDS if n in xprop.available_backends()]
    out = {}
    for n in (1, 2):
        path = tmp_path_factory.mktemp("dp") / f"ranks{n}.npz"
        result = mpirun(
            n, str(WORKER), str(path), "--backends", ",".join(names),
            "--dtypes", "float32,float64", "--steps", "50",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with np.load(path) as data:
            out[n] = dict(data)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", BACKENDS)
def test_two_ranks_train_as_one(runs, name, dtype):
    if f"{name}-{dtype}-W1" not in runs[1]:
        pytest.skip(f"backend {name} is not installed here")
    for key in ("W1", "b1", "W2", "b2", "loss"):
        one, two = runs[1][f"{name}-{dtype}-{key}"], runs[2][f"{name}-{dtype}-{key}"]
        relative = np.max(np.abs(two - one)) / np.max(np.abs(one))
        assert relative <= TOLERANCE[dtype], f"{key}: {relative:.3g}"
    # The parameters moved: a run that did nothing would agree too.
    start = xprop.TwoLayerNet(784, 100, 10, backend=xprop.get_backend("numpy"), seed=0)
    moved = np.max(np.abs(runs[2][f"{name}-{dtype}-W2"] - start.params["W2"]))
    assert moved > 1e-3


# --------------------------------------------------------------------------------------
# A rank that fails, ranks that disagree: an error on stderr, never a hang
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--disagree", "keys"), "rank 1 has keys ['W1', 'W2', 'b1', 'b2', 'extra']"),
        (("--disagree", "shapes"), "rank 1 has W1 (784, 101) float64 where rank 0 has W1"),
        (("--disagree", "dtypes"), "rank 1 has W1 (784, 100) float32 where rank 0 has W1 ("),
        (("--raise-on-rank", "1"), "rank 1 of 2 failed: RuntimeError: rank 1 was told to fail"),
    ],
)
def test_errors_end_every_rank(tmp_path, args, message):
    result = mpirun(2, str(WORKER), str(tmp_path / "x.npz"), *args, timeout=ERROR_TIMEOUT)
    assert result.returncode != 0
    assert message in result.stderr
    assert "aborting all 2 ranks" in result.stderr
    assert not (tmp_path / "x.npz").exists()


ABORT_SCRIPT = """
import sys
from xprop.distributed import DataParallel
dp = DataParallel()
try:  # code that catches its exceptions: sys.excepthook never sees them
    with dp.abort_on_error(expected=(OSError,)):
        if dp.rank == 1:
            {action}
        dp.comm.Barrier()  # rank 0 waits here for rank 1, which never comes
except BaseException:
    pass
print("rank", dp.rank, "went on")
"""


@pytest.mark.parametrize(
    ("action", "message", "traceback"),
    [
        ("raise OSError('no data on this node')", "failed: OSError: no data on this node", False),
        ("raise KeyError('w3')", "failed: KeyError: 'w3'", True),
        ("sys.exit(3)", "failed: SystemExit: 3", False),
    ],
)
def test_abort_on_error_ends_every_rank(action, message, traceback):
    result = mpirun(2, "-c", ABORT_SCRIPT.format(action=action), timeout=ERROR_TIMEOUT)
    assert result.returncode != 0
    assert f"xprop.distributed: rank 1 of 2 {message}; aborting all 2 ranks" in result.stderr
    assert ("Traceback" in result.stderr) is traceback  # the expected ones: the message alone
    assert "went on" not in result.stdout


# --------------------------------------------------------------------------------------
# examples/train_mnist.py --data-parallel
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir() -> str:
    folder = os.environ.get("XPROP_DATA_DIR")
    if not folder:
        pytest.skip("set XPROP_DATA_DIR to a folder with the four MNIST .gz files to run this")
    return folder


def test_example_on_two_ranks_matches_one_process(tmp_path, data_dir):
    common = ["--iters", "700", "--batch-size", "100", "--dtype", "float64"]
    one = subprocess.run(
        [sys.executable, str(EXAMPLE), *common, "--book-loop", "--json", str(tmp_path / "1.json")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env(), check=False,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = mpirun(
        2, str(EXAMPLE), *common, "--data-parallel", "--json", str(tmp_path / "2.json"),
        "--plot", str(tmp_path / "2.png"),
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    # Only rank 0 prints: the header once, the summary once.
    assert two.stdout.count("epoch  train_acc") == 1
    assert two.stdout.count("backend=numpy") == 1
    assert "data parallel on 2 ranks" in two.stdout
    a = json.loads((tmp_path / "1.json").read_text())
    b = json.loads((tmp_path / "2.json").read_text())
    assert (b["ranks"], b["path"]) == (2, "book loop, data parallel on 2 ranks")
    assert b["train_acc_list"] == a["train_acc_list"]
    assert b["test_acc"] == a["test_acc"] > 0.9
    np.testing.assert_allclose(b["train_loss_list"], a["train_loss_list"], rtol=1e-12)
    assert (tmp_path / "2.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.json", "2.json", "2.png"]


def test_example_rank_with_broken_data_aborts_the_others(tmp_path, data_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(data_dir):
        if name.endswith(".gz"):
            (broken / name).write_bytes(b"not MNIST")
    common = [str(EXAMPLE), "--data-parallel", "--iters", "5"]
    result = mpirun(
        [[*common, "--data-dir", data_dir], [*common, "--data-dir", str(broken)]],
        timeout=ERROR_TIMEOUT,
    )
    assert result.returncode != 0
    assert "rank 1 of 2 failed" in result.stderr
    # 9 bytes where MNIST's file has 9912422: refused by its size, before any hashing
    assert "it is 9 bytes, expected 9912422" in result.stderr


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        (
            [["--hidden", "50"], ["--hidden", "60"]],
            "rank 1 has W1 (784, 60) float32 where rank 0 has W1 (784, 50) float32",
        ),
        (
            [["--dtype", "float32"], ["--dtype", "float64"]],
            "rank 1 has W1 (784, 50) float64 where rank 0 has W1 (784, 50) float32",
        ),
        ([["--batch-size", "101"]] * 2, "101 samples does not divide evenly among 2 ranks"),
        ([["--backend", "auto"]] * 2, "name the backend with --data-parallel"),
    ],
)
def test_example_errors_end_every_rank(ranks, message, data_dir):
    common = [str(EXAMPLE), "--data-parallel", "--iters", "5", "--backend", "numpy"]
    result = mpirun([[*common, *args] for args in ranks], timeout=ERROR_TIMEOUT)
    assert result.returncode != 0
    assert message in result.stderr
    assert "aborting all 2 ranks" in result.stderr


# --------------------------------------------------------------------------------------
# benchmarks/bench_data_parallel.py
# --------------------------------------------------------------------------------------


def test_benchmark_quick_run_checks_one_rank_against_two(tmp_path):
    _require_mpi()
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_data_parallel.py"), "--quick",
         "--json", str(tmp_path / "dp.json")],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| 2 |" in result.stdout
    record = json.loads((tmp_path / "dp.json").read_text())
    assert set(record["best"]) == {"1", "2"}
    assert record["best"]["2"]["ranks"] == 2
    assert record["best"]["2"]["ms"]["allreduce"] > 0
    assert 0 < record["check"]["float64"]["2"] <= 1e-12
    assert 0 < record["check"]["float32"]["2"] <= 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["dp.json"]
