"""CuPy's creation functions create on the device they are given (xprop.libraries.cupy).

array-api-compat's CuPy namespace accepts ``device=`` in ``zeros``, ``ones``, ``arange``,
``full``, ``empty`` (and the ``*_like`` functions) and ignores it: the array lands on the
current device.  Loading xprop's CuPy library wraps them to enter the device.  The wrapper
is tested here with a stand-in for ``cupy.cuda.Device`` and a namespace that behaves as
array-api-compat's does, through xprop's own constants; the real thing where CuPy has GPUs
(one for the namespace, two for a backend on a GPU that is not the current one).
"""

from __future__ import annotations

import importlib.util
import types
from typing import Any

import numpy as np
import pytest

import xprop
from xprop import _constants
from xprop.libraries.cupy import honour_device


class FakeDevice:
    """``cupy.cuda.Device``: a GPU index, and a context manager that makes it current."""

    current = 0

    def __init__(self, index: int) -> None:
        self.id = int(index)
        self._before: list[int] = []

    def __enter__(self) -> FakeDevice:
        self._before.append(FakeDevice.current)
        FakeDevice.current = self.id
        return self

    def __exit__(self, *exc: object) -> None:
        FakeDevice.current = self._before.pop()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeDevice) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class FakeArray:
    """A CuPy array: it lives where the current device was when it was made."""

    def __init__(self, shape: Any = (), dtype: Any = np.float32) -> None:
        self.shape = shape if isinstance(shape, tuple) else (shape,)
        self.dtype = dtype
        self.device = FakeDevice(FakeDevice.current)


def fake_compat_cupy() -> types.ModuleType:
    """A namespace whose creation functions take ``device=`` and ignore it, as 1.16's do."""
    ns = types.ModuleType("fake_array_api_compat_cupy")

    def plain(name: str):
        def create(*args: Any, dtype: Any = None, device: Any = None, **kwargs: Any):
            shape = args[0] if name in ("zeros", "ones", "empty", "full") else ()
            return FakeArray(shape, dtype)

        create.__name__ = name
        return create

    def like(name: str):
        def create(x: Any, /, *args: Any, dtype: Any = None, device: Any = None, **kwargs: Any):
            return FakeArray(x.shape, dtype or x.dtype)

        create.__name__ = name
        return create

    for name in ("arange", "empty", "eye", "full", "linspace", "ones", "zeros"):
        setattr(ns, name, plain(name))
    for name in ("empty_like", "full_like", "ones_like", "zeros_like"):
        setattr(ns, name, like(name))
    ns.finfo = np.finfo
    return ns


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.setattr(FakeDevice, "current", 0)
    namespace = fake_compat_cupy()
    # As array-api-compat is: the device is ignored.
    assert namespace.zeros((2,), device=FakeDevice(1)).device.id == 0
    honour_device(namespace, FakeDevice)
    return namespace


def test_creation_functions_create_on_the_device_given(ns: types.ModuleType) -> None:
    gpu1 = FakeDevice(1)
    made = [
        ns.zeros((2,), device=gpu1),
        ns.ones((2,), device=gpu1),
        ns.empty((2,), device=gpu1),
        ns.full((2,), 3.0, device=gpu1),
        ns.arange(3, device=gpu1),
        ns.eye(2, device=gpu1),
        ns.linspace(0.0, 1.0, 5, device=gpu1),
    ]
    assert [a.device.id for a in made] == [1] * len(made)
    assert FakeDevice.current == 0  # the current device is left as it was
    assert ns.zeros((2,)).device.id == 0  # no device: the current one, as before
    assert ns.zeros.__name__ == "zeros"


def test_like_functions_default_to_their_arguments_device(ns: types.ModuleType) -> None:
    with FakeDevice(1):
        x = FakeArray((2, 3))
    for name in ("zeros_like", "ones_like", "empty_like"):
        assert getattr(ns, name)(x).device.id == 1, name
        assert getattr(ns, name)(x, device=FakeDevice(2)).device.id == 2, name
    assert ns.full_like(x, 7.0).device.id == 1
    assert FakeDevice.current == 0


def test_the_current_device_comes_back_after_an_error(ns: types.ModuleType) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("out of memory")

    bare = fake_compat_cupy()
    bare.zeros = broken
    honour_device(bare, FakeDevice)
    with pytest.raises(MemoryError):
        bare.zeros((2,), device=FakeDevice(1))
    assert FakeDevice.current == 0


def test_wrapping_is_done_once(ns: types.ModuleType) -> None:
    entered = []

    class CountingDevice(FakeDevice):
        def __enter__(self) -> FakeDevice:
            entered.append(self.id)
            return super().__enter__()

    wrapped = ns.zeros
    honour_device(ns, CountingDevice)  # a second load of the library
    assert ns.zeros is wrapped
    ns.zeros((2,), device=FakeDevice(1))
    assert entered == []  # still the first wrapper, entering the device once


def test_xprops_constants_land_on_their_arrays_device(ns: types.ModuleType) -> None:
    """The cached constants of every step (:mod:`xprop._constants`) on a second GPU."""
    with FakeDevice(1):
        x = FakeArray((4, 3), np.float32)
    made = [
        _constants.ones(ns, x, (4,)),
        _constants.zero(ns, x),
        _constants.constant(ns, x, 0.5),
        _constants.smallest_normal(ns, x),
        _constants.class_range(ns, x, 3, np.int64),
    ]
    assert [a.device.id for a in made] == [1] * len(made)
    assert FakeDevice.current == 0


# --------------------------------------------------------------------------------------
# The real CuPy, where it has GPUs
# --------------------------------------------------------------------------------------


def _gpus() -> int:
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("cupy is not installed")
    try:
        backend = xprop.get_backend("cupy", device=0)
    except xprop.BackendError as exc:
        pytest.skip(f"cupy cannot run here: {exc}")
    return len(backend.library.devices(backend.xp))


def test_cupy_namespace_is_patched_where_compute_code_finds_it() -> None:
    _gpus()
    import array_api_compat
    import cupy

    be = xprop.get_backend("cupy", device=0, dtype="float32")
    x = be.zeros((3, 2))
    assert array_api_compat.array_namespace(x) is be.xp  # what layers use
    for name in ("zeros", "ones", "arange", "full", "empty", "zeros_like", "ones_like"):
        assert getattr(be.xp, name)._xprop_enters_device, name
    with cupy.cuda.Device(0):
        assert be.xp.zeros(2, device=be.device).device.id == be.device.id
        assert be.xp.zeros_like(x).device.id == be.device.id


def test_cupy_backend_on_a_second_gpu_creates_everything_there() -> None:
    if _gpus() < 2:
        pytest.skip("needs 2 GPUs: a backend on GPU 1 while GPU 0 is the current device")
    import cupy

    with cupy.cuda.Device(0):  # the current device is not the backend's
        be = xprop.get_backend("cupy", device=1, dtype="float32")
        xp = be.xp
        x = be.asarray(np.ones((4, 3)))
        made = {
            "Backend.zeros": be.zeros(3),
            "Backend.asarray": x,
            "HostRNG.normal": be.rng(0).normal((2, 2)),
            "zeros_like": xp.zeros_like(x),
            "ones": _constants.ones(xp, x, (4,)),
            "zero": _constants.zero(xp, x),
            "constant": _constants.constant(xp, x, 0.5),
            "smallest_normal": _constants.smallest_normal(xp, x),
            "class_range": _constants.class_range(xp, x, 3, xp.int64),
        }
        net = xprop.TwoLayerNet(3, 4, 2, backend=be, seed=0)
        made.update({f"param {k}": v for k, v in net.params.items()})
        wrong = {k: a.device.id for k, a in made.items() if a.device.id != 1}
        assert wrong == {}, f"made on another GPU than 1: {wrong}"
        assert cupy.cuda.Device().id == 0
