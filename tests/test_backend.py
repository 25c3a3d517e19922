"""The backend selector: names, precedence, errors, registration, creation and the RNG."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import xprop
from xprop.backend import BackendError
from xprop.backends import unregister_backend


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

        def compile_step(self, net, lr):
            calls.append("compile_step")
            return super().compile_step(net, lr)

    xprop.register_backend(Counting)
    try:
        be = xprop.get_backend("counting", device="device1", dtype="float64")
        net = xprop.TwoLayerNet(3, 4, 2, backend=be, seed=0)
        step = net.compile_step(0.1)
        loss = step(be.asarray(np.ones((5, 3))), be.asarray(np.arange(5) % 2))
        be.synchronize(loss)
        assert float(be.to_numpy(loss)) > 0
        assert calls == ["parse_device", "compile_step", "synchronize 1", "to_numpy"]
        assert xprop.backends.library_for(strict).name == "array_api_strict"  # built-in first
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
