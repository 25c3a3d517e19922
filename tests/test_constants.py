"""Cached constants and the sums built on them: right numbers everywhere, never a stale trace."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device

import xprop
from xprop import _constants
from xprop._sums import column_sums, row_sums


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (100, 10), (7, 50)])
def test_sums_match_xp_sum(backend: xprop.Backend, shape: tuple[int, int]) -> None:
    xp = backend.xp
    host = np.random.default_rng(sum(shape)).standard_normal(shape)
    x = backend.asarray(host)
    cols, rows = column_sums(xp, x), row_sums(xp, x)
    assert tuple(cols.shape) == (shape[1],)
    assert tuple(rows.shape) == (shape[0], 1)
    assert cols.dtype == x.dtype
    assert rows.dtype == x.dtype
    # strict's device1 catches a vector of ones made on the default device
    assert device(cols) == device(x)
    assert device(rows) == device(x)
    np.testing.assert_allclose(backend.to_numpy(cols), host.sum(axis=0), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        backend.to_numpy(rows), host.sum(axis=1, keepdims=True), rtol=1e-13, atol=1e-14
    )


def test_sums_in_float32(backend32: xprop.Backend) -> None:
    xp = backend32.xp
    host = np.random.default_rng(0).standard_normal((100, 50)).astype(np.float32)
    x = backend32.asarray(host)
    cols = column_sums(xp, x)
    assert cols.dtype == xp.float32
    np.testing.assert_allclose(
        backend32.to_numpy(cols), host.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5
    )


class _UnhashableDevice:
    """A device object like those of libraries that define equality but no hash."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _UnhashableDevice) and other.name == self.name

    def __repr__(self) -> str:
        return f"<device {self.name}>"


def test_cache_takes_unhashable_devices() -> None:
    made = []

    class FakeNamespace:  # records where the ones are made; stands in for a GPU library
        @staticmethod
        def ones(shape, dtype=None, device=None):
            made.append(device)
            return np.ones(shape, dtype=dtype)

    class FakeArray:
        dtype = np.float32

        def __init__(self, dev: _UnhashableDevice) -> None:
            self.device = dev

    xp = FakeNamespace()
    a, b = FakeArray(_UnhashableDevice("gpu0")), FakeArray(_UnhashableDevice("gpu0"))
    first = _constants.ones(xp, a, (3,))
    again = _constants.ones(xp, b, (3,))  # an equal device object: cached
    other = _constants.ones(xp, FakeArray(_UnhashableDevice("gpu1")), (3,))
    assert again is first
    assert other is not first
    assert [d.name for d in made] == ["gpu0", "gpu1"]


def test_constants_are_cached_per_dtype_and_device(backend: xprop.Backend) -> None:
    xp = backend.xp
    x64 = backend.asarray([[1.0, -2.0], [3.0, 4.0]])
    x32 = backend.asarray([[1.0, -2.0]], dtype="float32")
    assert _constants.ones(xp, x64, (2,)) is _constants.ones(xp, x64, (2,))
    assert _constants.ones(xp, x32, (2,)).dtype == xp.float32
    z = _constants.zero(xp, x64)
    assert z.shape == ()
    assert z.dtype == x64.dtype
    assert device(z) == device(x64)
    r = _constants.class_range(xp, x64, 4, xp.int32)
    assert r.dtype == xp.int32
    assert device(r) == device(x64)
    np.testing.assert_array_equal(backend.to_numpy(r), [0, 1, 2, 3])


def test_constant_and_smallest_normal(backend32: xprop.Backend) -> None:
    xp = backend32.xp
    for dtype in ("float32", "float64"):
        x = backend32.asarray([[1.0, 2.0]], dtype=dtype)
        half = _constants.constant(xp, x, 0.5)
        assert half is _constants.constant(xp, x, 0.5)  # cached
        assert half.shape == ()
        assert half.dtype == x.dtype
        assert device(half) == device(x)  # strict's device1 catches the default device
        assert float(backend32.to_numpy(half)) == 0.5
        # 0.0 and -0.0 are equal as keys but not as constants
        neg = backend32.to_numpy(_constants.constant(xp, x, -0.0))
        assert np.signbit(neg)
        assert not np.signbit(backend32.to_numpy(_constants.constant(xp, x, 0.0)))
        tiny = _constants.smallest_normal(xp, x)
        assert tiny is _constants.smallest_normal(xp, x)
        assert tiny.dtype == x.dtype
        assert device(tiny) == device(x)
        assert float(backend32.to_numpy(tiny)) == np.finfo(np.dtype(dtype)).smallest_normal


def test_nothing_made_while_tracing_is_kept() -> None:
    """Two shapes traced in one process: the second trace must not see the first's arrays."""
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    jnp = jax.numpy
    _constants._CACHE.clear()

    @jax.jit
    def f(x):
        floor = _constants.smallest_normal(jnp, x) + _constants.constant(jnp, x, -1.0)
        return column_sums(jnp, x) + row_sums(jnp, x)[0, 0] + _constants.zero(jnp, x) + floor

    np.testing.assert_allclose(f(jnp.ones((3, 2))), [4.0, 4.0])
    np.testing.assert_allclose(f(jnp.ones((3, 4))), [6.0, 6.0, 6.0, 6.0])
    assert _constants._CACHE == {}  # every constant of both traces was made, not kept
    np.testing.assert_allclose(column_sums(jnp, jnp.ones((3, 2))), [3.0, 3.0])
    assert len(_constants._CACHE) == 1  # eager calls cache as usual
