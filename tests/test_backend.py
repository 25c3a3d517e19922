"""The backend selector: names, precedence, errors, registration, creation and the RNG."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import xprop
from xprop.backend import BackendError
from xprop.libraries import unregister_backend


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("XPROP_BACKEND", "XPROP_DTYPE", "XPROP_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    xprop.set_backend(None)
    return monkeypatch


def test_default_is_numpy_float32(clean_env: pytest.MonkeyPatch) -> None:
    be = xprop.get_backend()
    assert be.name == "numpy"
    assert be.dtype == np.float32
    assert be.dtype_name == "float32"


def test_env_then_argument_precedence(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("XPROP_BACKEND", "array_api_strict")
    clean_env.setenv("XPROP_DTYPE", "float64")
    assert xprop.get_backend().name == "array_api_strict"
    assert xprop.get_backend().dtype_name == "float64"
    # The argument beats the environment, for the name and the dtype alike.
    be = xprop.get_backend("numpy", dtype="float32")
    assert (be.name, be.dtype_name) == ("numpy", "float32")
    assert xprop.get_backend(dtype=np.float64).dtype_name == "float64"


def test_env_device(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    clean_env.setenv("XPROP_DEVICE", "device1")
    be = xprop.get_backend("array_api_strict")
    assert str(be.device) == str(be.xp.Device("device1"))


def test_set_backend_and_use_backend(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    clean_env.setenv("XPROP_BACKEND", "numpy")
    try:
        xprop.set_backend("array_api_strict", dtype="float64")
        assert xprop.get_backend().name == "array_api_strict"
        with xprop.use_backend("numpy") as inner:
            assert inner.name == "numpy"
            assert xprop.get_backend().name == "numpy"
            assert xprop.TwoLayerNet(4, 3, 2, seed=0).backend.name == "numpy"
        assert xprop.get_backend().name == "array_api_strict"
        assert xprop.get_backend().dtype_name == "float64"
    finally:
        xprop.set_backend(None)
    assert xprop.get_backend().name == "numpy"


def test_unknown_name_lists_known_ones(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError) as info:
        xprop.get_backend("cupyy")
    message = str(info.value)
    assert "unknown backend 'cupyy'" in message
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict"):
        assert name in message
    assert isinstance(info.value, ValueError)


def test_unknown_name_from_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("XPROP_BACKEND", "nope")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        xprop.get_backend()


def test_missing_library_names_the_extra(clean_env: pytest.MonkeyPatch) -> None:
    class Ghost(xprop.ArrayLibrary):
        name = "ghost"
        module = "no_such_array_lib"
        install_hint = "pip install ghost"

        def load(self):
            return importlib.import_module("no_such_array_lib")

    xprop.register_backend(Ghost)
    try:
        with pytest.raises(BackendError, match=r"not installed.*pip install ghost"):
            xprop.get_backend("ghost")
        assert "ghost" not in xprop.available_backends()
    finally:
        unregister_backend("ghost")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_cupy_missing_names_cuda_extras(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match=r"xprop\[cuda12\].*xprop\[cuda13\]"):
        xprop.get_backend("cupy")


def test_bad_dtype(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="not a floating dtype"):
        xprop.get_backend("numpy", dtype="int32")
    with pytest.raises(BackendError, match="unknown dtype 'float33'"):
        xprop.get_backend("numpy", dtype="float33")


def test_bad_device(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    with pytest.raises(BackendError, match=r"device 'device9'.*choose one of"):
        xprop.get_backend("array_api_strict", device="device9")


def test_available_backends_has_numpy() -> None:
    names = xprop.available_backends()
    assert names[0] == "numpy"
    assert set(names) <= set(xprop.backend.known_backends())


def test_register_custom_backend_over_strict(clean_env: pytest.MonkeyPatch) -> None:
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")

    class Strict2(xprop.ArrayLibrary):  # only the three required lines: every hook defaults
        name = "strict2"
        module = "array_api_strict"

        def load(self):
            return strict

    xprop.register_backend(Strict2)
    try:
        with pytest.raises(BackendError, match="already registered"):
            xprop.register_backend(Strict2)
        assert "strict2" in xprop.available_backends()
        be = xprop.get_backend("strict2", device="device1", dtype="float64")
        assert isinstance(be.library, Strict2)
        x = be.asarray([[1.0, 2.0], [3.0, 4.0]])
        assert type(x).__module__.startswith("array_api_strict")
        assert x.device == strict.Device("device1")
        assert x.dtype == strict.float64
        net = xprop.TwoLayerNet(2, 3, 2, backend=be, seed=1)
        assert net.params["W1"].device == strict.Device("device1")
        # The default to_numpy (numpy.array) cannot read device1 arrays: strict2 has no
        # hook for it, so the generic answer is an error, not wrong numbers.
        with pytest.raises((RuntimeError, TypeError, ValueError)):
            be.to_numpy(net.predict(x))
    finally:
        unregister_backend("strict2")


def test_registered_class_gets_every_hook(clean_env: pytest.MonkeyPatch) -> None:
    """A user's library class is asked for devices, host copies, syncs and the step."""
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    calls: list[str] = []

    class Counting(xprop.ArrayLibrary):
        name = "counting"
        module = "array_api_strict"

        def load(self):
            return strict

        def parse_device(self, xp, spec):
            calls.append("parse_device")
            return xp.Device(str(spec))

        def to_numpy(self, x):
            calls.append("to_numpy")
            return np.array(x.to_device(strict.Device("CPU_DEVICE")), copy=True)

        def synchronize(self, device, arrays=()):
            calls.append(f"synchronize {len(arrays)}")

        def step_kind(self, device):
            calls.append("step_kind")
            return super().step_kind(device)

    xprop.register_backend(Counting)
    try:
        be = xprop.get_backend("counting", device="device1", dtype="float64")
        net = xprop.TwoLayerNet(3, 4, 2, backend=be, seed=0)
        step = net.compile_step(0.1)
        loss = step(be.asarray(np.ones((5, 3))), be.asarray(np.arange(5) % 2))
        be.synchronize(loss)
        assert float(be.to_numpy(loss)) > 0
        assert calls == ["parse_device", "step_kind", "synchronize 1", "to_numpy"]
        assert xprop.libraries.library_for(strict).name == "array_api_strict"  # built-in first
    finally:
        unregister_backend("counting")


def test_register_backend_rejects_what_is_not_a_library_class() -> None:
    with pytest.raises(BackendError, match=r"subclass of xprop\.ArrayLibrary"):
        xprop.register_backend("dpnp", lambda: None)  # the old factory form

    class NoName(xprop.ArrayLibrary):
        def load(self):
            return None

    with pytest.raises(BackendError, match="name must be a non-empty string"):
        xprop.register_backend(NoName)

    class NoLoad(xprop.ArrayLibrary):
        name = "noload"

    with pytest.raises(BackendError, match="must define load"):
        xprop.register_backend(NoLoad)


def test_a_selector_chooses_the_backend_its_name_stands_for(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from xprop import backend as selection

    asked = []

    def smallest(dtype: str) -> xprop.Backend:
        asked.append(dtype)
        return xprop.get_backend("numpy", dtype=dtype)

    clean_env.setitem(selection._SELECTORS, "smallest", None)  # removed again afterwards
    selection.register_selector("smallest", smallest, overwrite=True)
    assert xprop.get_backend("smallest", dtype="float64").dtype_name == "float64"
    clean_env.setenv("XPROP_BACKEND", "smallest")
    assert xprop.get_backend().name == "numpy"
    assert asked == ["float64", "float32"]
    assert "auto" in selection._SELECTORS  # registered by xprop.auto, which import xprop loads


def test_register_selector_rejects_taken_and_bad_names(clean_env: pytest.MonkeyPatch) -> None:
    from xprop.auto import auto_backend
    from xprop.backend import register_selector

    with pytest.raises(BackendError, match="'numpy' is the name of an array library"):
        register_selector("numpy", auto_backend)
    with pytest.raises(BackendError, match="already a selector; pass overwrite=True"):
        register_selector("auto", lambda dtype: xprop.get_backend("numpy"))
    register_selector("auto", auto_backend)  # the same function again: nothing changes
    with pytest.raises(BackendError, match="non-empty string"):
        register_selector(" auto", auto_backend)
    with pytest.raises(BackendError, match="needs a function of the dtype name"):
        register_selector("fastest", "auto")  # type: ignore[arg-type]


def test_asarray_device_and_dtypes(backend32: xprop.Backend) -> None:
    be = backend32
    xp = be.xp
    from array_api_compat import device

    floats = be.asarray(np.linspace(0, 1, 6).reshape(2, 3))
    assert floats.dtype == be.dtype
    assert str(device(floats)) == str(be.device)
    ints = be.asarray(np.array([3, 1, 2]))
    assert xp.isdtype(ints.dtype, "integral")
    assert str(device(ints)) == str(be.device)
    small = be.asarray(np.array([1, 2], dtype=np.uint8))
    assert small.dtype == xp.uint8
    as64 = be.asarray([0.5, 0.25], dtype="float64") if be.name != "jax" else None
    if as64 is not None:
        assert as64.dtype == xp.float64
    with pytest.raises(BackendError, match="cannot put data of dtype"):
        be.asarray(np.array(["a", "b"]))


def test_to_numpy_round_trip(backend: xprop.Backend) -> None:
    host = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    back = backend.to_numpy(backend.asarray(host))
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    labels = np.array([0, 9, 4])
    np.testing.assert_array_equal(backend.to_numpy(backend.asarray(labels)), labels)


def test_rng_identical_on_every_backend(backend32: xprop.Backend) -> None:
    ref = xprop.get_backend("numpy", dtype="float32")
    got, want = backend32.rng(42), ref.rng(42)
    np.testing.assert_array_equal(
        backend32.to_numpy(got.normal((5, 4), scale=0.01)), want.normal((5, 4), scale=0.01)
    )
    np.testing.assert_array_equal(backend32.to_numpy(got.choice(100, 7)), want.choice(100, 7))
    np.testing.assert_array_equal(backend32.to_numpy(got.permutation(9)), want.permutation(9))
    draw = backend32.to_numpy(backend32.rng(0).choice(10, 10, replace=False))
    assert sorted(draw.tolist()) == list(range(10))


def test_backend_is_immutable() -> None:
    be = xprop.get_backend("numpy")
    with pytest.raises(AttributeError):
        be.name = "torch"  # type: ignore[misc]


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROP_")}
    return subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_jax_float64_says_once_that_it_switches_x64_on() -> None:
    pytest.importorskip("jax", reason="JAX is not installed")
    code = (
        "import warnings, jax, xprop\n"
        "from xprop.libraries.jax import X64Warning\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    xprop.get_backend('jax', dtype='float64')\n"
        "    xprop.get_backend('jax', dtype='float64')\n"
        "print(len(seen), seen[0].category is X64Warning, jax.config.read('jax_enable_x64'))\n"
        "print(seen[0].message)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.splitlines()[:2]
    assert first == "1 True True"
    assert "whole process" in message


def test_jax_float32_matmuls_are_full_precision_in_the_suite() -> None:
    """tests/conftest.py pins JAX's float32 matrix products to full float32 precision.

    On NVIDIA GPUs since Ampere JAX's default is TF32 (errors near 1e-3), and the suite's
    float32 tolerances of 1e-5 and 1e-6 would fail there only.  The compiled program says
    which precision it asked for, on any device, so this runs on the CPU too.
    """
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    assert jax.config.jax_default_matmul_precision == "highest"
    be = xprop.get_backend("jax", dtype="float32")
    a = be.asarray(np.ones((4, 3)))
    b = be.asarray(np.ones((3, 2)))
    for product in (lambda a, b: a @ b, lambda a, b: be.xp.matmul(a, b)):
        text = jax.jit(product).lower(a, b).as_text()
        dots = [line for line in text.splitlines() if "dot_general" in line]
        assert dots, text
        assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), dots


def test_jax_float32_refuses_float64_arrays_without_x64() -> None:
    pytest.importorskip("jax", reason="JAX is not installed")
    code = (
        "import numpy as np, xprop\n"
        "be = xprop.get_backend('jax', dtype='float32')\n"
        "try:\n"
        "    be.asarray(np.ones(3), dtype='float64')\n"
        "except xprop.BackendError as exc:\n"
        "    print(exc)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert "cannot hold float64 arrays right now" in result.stdout
    assert "jax_enable_x64" in result.stdout


def test_bad_names_and_env_values_are_named(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match=r"chosen by its name, a string.*got int 123"):
        xprop.get_backend(123)  # type: ignore[arg-type]
    clean_env.setenv("XPROP_DTYPE", "float33")
    with pytest.raises(BackendError, match=r"^XPROP_DTYPE='float33': unknown dtype"):
        xprop.get_backend()
    clean_env.delenv("XPROP_DTYPE")
    clean_env.setenv("XPROP_BACKEND", "array_api_strict")
    clean_env.setenv("XPROP_DEVICE", "gpu9")
    with pytest.raises(BackendError, match=r"^XPROP_DEVICE='gpu9': device 'gpu9'"):
        xprop.get_backend()
    clean_env.setenv("XPROP_BACKEND", "nope")
    with pytest.raises(BackendError, match=r"^XPROP_BACKEND='nope': unknown backend"):
        xprop.get_backend()
    # An argument that is wrong is the caller's own: no variable is blamed.
    with pytest.raises(BackendError, match=r"^unknown dtype 'float33'"):
        xprop.get_backend("numpy", dtype="float33")


def test_auto_refuses_a_device_it_would_ignore(clean_env: pytest.MonkeyPatch) -> None:
    """``auto`` picks the device itself: a device asked for is an error, not ignored."""
    from xprop import auto

    clean_env.setattr(auto, "_AUTO_CACHE", {})
    clean_env.setenv("XPROP_BACKEND", "auto")
    for device in ("garbage", "cpu"):
        clean_env.setenv("XPROP_DEVICE", device)
        with pytest.raises(
            BackendError,
            match=rf"^XPROP_DEVICE='{device}': backend 'auto' chooses the device itself.*"
            "leave the device unset",
        ):
            xprop.get_backend()
    with pytest.raises(BackendError, match=r"^backend 'auto' chooses the device itself"):
        xprop.get_backend("auto", device="cpu")
    assert auto.last_choice("float32") is None  # refused before any timing


def test_torch_meta_device_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="torch is not installed")
    with pytest.raises(BackendError, match=r"^device 'meta' is torch's meta device.*'cpu'"):
        xprop.get_backend("torch", device="meta")
    clean_env.setenv("XPROP_BACKEND", "torch")
    clean_env.setenv("XPROP_DEVICE", "meta")
    with pytest.raises(BackendError, match=r"^XPROP_DEVICE='meta': device 'meta' is torch's"):
        xprop.get_backend()
    clean_env.setenv("XPROP_DEVICE", "cpu")
    be = xprop.get_backend()
    assert be.to_numpy(be.zeros(2)).tolist() == [0.0, 0.0]  # a device that holds values


def test_strict_float16_message_lists_what_it_has(clean_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    with pytest.raises(BackendError) as info:
        xprop.get_backend("array_api_strict", dtype="float16")
    message = str(info.value)
    assert "unknown dtype 'float16'" in message
    assert "use one of: float32, float64 " in message  # float16 is not offered back


def test_load_returning_none_is_named(clean_env: pytest.MonkeyPatch) -> None:
    class Empty(xprop.ArrayLibrary):
        name = "empty"

        def load(self):
            return None

    xprop.register_backend(Empty)
    try:
        with pytest.raises(BackendError, match=r"Empty\.load\(\) returned None"):
            xprop.get_backend("empty")
        assert "empty" not in xprop.available_backends()
    finally:
        unregister_backend("empty")


def test_set_backend_inside_use_backend_ignores_the_block(
    clean_env: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    try:
        with xprop.use_backend("numpy", dtype="float64"):
            chosen = xprop.set_backend("array_api_strict")
            assert chosen.dtype_name == "float32"  # not the block's float64
            assert xprop.get_backend().name == "numpy"  # the block still rules inside
        assert xprop.get_backend().describe() == chosen.describe()
    finally:
        xprop.set_backend(None)


def test_use_backend_is_per_asyncio_task(clean_env: pytest.MonkeyPatch) -> None:
    """Each task sees its own block, whichever order the blocks open and close in."""
    import asyncio

    pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    seen: dict[str, list[str]] = {"t1": [], "t2": []}
    t1_open, t2_open, t1_closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def t1() -> None:
        with xprop.use_backend("numpy", dtype="float64"):
            t1_open.set()
            await t2_open.wait()
            seen["t1"].append(xprop.get_backend().name)
        t1_closed.set()

    async def t2() -> None:
        await t1_open.wait()
        with xprop.use_backend("array_api_strict"):
            t2_open.set()
            await t1_closed.wait()  # t1's block has exited meanwhile
            seen["t2"].append(xprop.get_backend().name)
        seen["t2"].append(xprop.get_backend().name)

    async def main() -> None:
        await asyncio.gather(t1(), t2())

    asyncio.run(main())
    assert seen == {"t1": ["numpy"], "t2": ["array_api_strict", "numpy"]}


def test_asarray_never_shares_memory_with_the_caller(backend32: xprop.Backend) -> None:
    """The book's params[k] -= ... on an array made by asarray leaves the user's array alone."""
    for host in (
        np.arange(6, dtype=np.float32).reshape(2, 3),  # same dtype: would share on the CPU
        np.arange(6, dtype=np.int64),  # integer indices: the fast path
    ):
        keep = host.copy()
        x = backend32.asarray(host)
        x -= x  # in place where the library allows it; a rebinding elsewhere
        np.testing.assert_array_equal(host, keep)
    net = xprop.TwoLayerNet(3, 4, 2, backend=backend32, seed=0)
    w = np.ones((3, 4), dtype=np.float32)
    net.params["W1"] = backend32.asarray(w)
    step = net.compile_step(0.5)
    step(backend32.asarray(np.ones((2, 3))), backend32.asarray(np.array([0, 1])))
    np.testing.assert_array_equal(w, np.ones((3, 4), dtype=np.float32))
    out = backend32.to_numpy(net.params["W1"])
    out += 1  # to_numpy is a copy too
    assert not np.array_equal(backend32.to_numpy(net.params["W1"]), out)


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"MPI_LOCALNRANKS": "2"}, "false"),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, "false"),
        ({"MPI_LOCALNRANKS": "1"}, "unset"),
        ({"MPI_LOCALNRANKS": "2", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}, "true"),
        ({}, "unset"),
    ],
)
def test_jax_allocates_on_demand_when_ranks_share_a_node(env: dict, want: str) -> None:
    """Several MPI ranks on one node: JAX must not take 75% of the GPU in each."""
    pytest.importorskip("jax", reason="JAX is not installed")
    import subprocess
    import sys

    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
        and k != "XLA_PYTHON_CLIENT_PREALLOCATE"
    }
    code = (
        "import os, xprop; xprop.get_backend('jax'); "
        "print(os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE', 'unset'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == want


def test_a_backend_for_a_device_activates_it_and_so_does_training(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """CuPy runs kernels on its *current* device, not its arrays': a backend made for a
    device asked for (``device=``, ``XPROP_DEVICE``, a rank's placement) makes it current
    (``ArrayLibrary.activate``), and a ``Trainer`` does again when it trains (another
    backend may have been made since).  Recorded here with array-api-strict's two
    devices standing in for two GPUs."""
    strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    activated: list[str] = []

    class Recording(xprop.ArrayLibrary):
        name = "recording"
        module = "array_api_strict"

        def load(self):
            return strict

        def activate(self, device):
            activated.append(str(device))

        def to_numpy(self, x):
            return np.asarray(strict.asarray(x, device=strict.Device("CPU_DEVICE")))

    xprop.register_backend(Recording)
    try:
        assert xprop.get_backend("recording").name == "recording"
        assert activated == []  # the default device: nothing asked for, nothing made current
        be = xprop.get_backend("recording", device="device1", dtype="float64")
        assert activated == [str(strict.Device("device1"))]
        clean_env.setenv("XPROP_DEVICE", "device1")
        xprop.get_backend("recording", dtype="float64")
        assert len(activated) == 2
        rng = np.random.default_rng(0)
        x, t = be.asarray(rng.random((20, 3))), be.asarray(rng.integers(0, 2, 20))
        net = xprop.TwoLayerNet(3, 4, 2, backend=be, seed=0)
        xprop.Trainer(net, x, t, x, t, epochs=1, mini_batch_size=10, verbose=False).train()
        assert activated[2:] == [str(strict.Device("device1"))]
    finally:
        unregister_backend("recording")
