"""Sums written as matrix products with ones: the same numbers as ``xp.sum`` everywhere."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device

import xprop
from xprop._sums import sum_axis0, sum_last_keepdims


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (100, 10), (7, 50)])
def test_sums_match_xp_sum(backend: xprop.Backend, shape: tuple[int, int]) -> None:
    xp = backend.xp
    host = np.random.default_rng(sum(shape)).standard_normal(shape)
    x = backend.asarray(host)
    cols, rows = sum_axis0(xp, x), sum_last_keepdims(xp, x)
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
    cols = sum_axis0(xp, x)
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


def test_ones_cache_takes_unhashable_devices() -> None:
    from xprop import _sums

    made = []

    class FakeNamespace:  # records where the ones are made; stands in for a GPU library
        @staticmethod
        def ones(shape, dtype=None, device=None):
            made.append(device)
            return np.ones(shape, dtype=dtype)

    xp = FakeNamespace()
    a, b = _UnhashableDevice("gpu0"), _UnhashableDevice("gpu0")
    first = _sums._ones(xp, (3,), np.float32, a)
    again = _sums._ones(xp, (3,), np.float32, b)  # an equal device object: cached
    other = _sums._ones(xp, (3,), np.float32, _UnhashableDevice("gpu1"))
    assert again is first
    assert other is not first
    assert [d.name for d in made] == ["gpu0", "gpu1"]
