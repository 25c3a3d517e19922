"""Dropout (ch. 6.4.3, Srivastava et al., arXiv:1207.0580), the book's layer.

In training each unit is kept with probability ``1 - dropout_ratio`` and zeroed otherwise,
without rescaling; at inference every output is multiplied by ``1 - dropout_ratio`` instead
(the book's convention, not the "inverted dropout" most libraries use).

The standard has no random numbers, so the masks come from a seeded NumPy generator on the
host, as every random draw in xprop does: one seed gives the same masks on every backend.
On a GPU the host draw and the copy cost time at every step; ``device_masks=True`` draws
the masks on the device instead, with a counter-based hash written in standard integer
operations (still one seed, the same masks on every backend, but not the host masks).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from typing import Any

from array_api_compat import device

from xprop._namespace import namespace, require_float
from xprop.nn.layer import Layer

__all__ = ["Dropout", "check_ratio"]

_U24 = 1 << 24  # device masks compare 24-bit uniform integers with the ratio


class Dropout(Layer):
    """``out = x * mask`` in training (``mask`` 1 with probability ``1 - dropout_ratio``).

    Parameters
    ----------
    dropout_ratio : float
        Probability of dropping a unit, in ``[0, 1)`` (the book's 0.5).
    seed : int, optional
        Seed of the mask generator (ignored when ``generator`` is given); ``None`` draws a
        fresh seed from the operating system.
    generator : numpy.random.Generator, optional
        A host generator to draw from, e.g. ``backend.rng(seed).generator``; layers of one
        network may share one, which then yields their masks in call order.
    device_masks : bool
        Draw masks on the device (see the module docstring): no host work and no copy per
        step, which pays on GPUs.  Only two integers per step come from the host generator.

    Notes
    -----
    ``forward(x, train_flg=True)`` takes ``x`` of any shape.  Training: draws a keep-mask
    with ``uniform[0, 1) > dropout_ratio``, as the book does, stores it (as 0/1 in ``x``'s
    dtype) in ``mask`` and returns ``x * mask``.  Inference: returns
    ``x * (1 - dropout_ratio)``.  ``backward(dout)`` returns ``dout * mask`` after a
    training pass and ``dout * (1 - dropout_ratio)`` after an inference pass.

    Inside ``with layer.fixed_mask():`` training passes reuse the stored mask (drawing one
    only when there is none of the input's shape), so the layer is a fixed function, as
    gradient checking needs.
    """

    takes_train_flg = True

    def __init__(
        self,
        dropout_ratio: float = 0.5,
        *,
        seed: int | None = None,
        generator: Any = None,
        device_masks: bool = False,
    ) -> None:
        self.dropout_ratio = check_ratio(dropout_ratio)
        if generator is None:
            from xprop.backend import get_backend  # creation asks the backend module

            generator = get_backend("numpy").rng(seed).generator
        elif not callable(getattr(generator, "random", None)):
            raise TypeError(
                f"generator must be a numpy.random.Generator (e.g. backend.rng(seed)"
                f".generator), got {type(generator).__name__}"
            )
        self.generator = generator
        self.device_masks = bool(device_masks)
        self.mask: Any = None
        self.train_flg = True
        self._frozen = False
        self._index: Any = None  # flat element indices for device masks, kept per shape
        #: The two int32 keys of the next device mask, as an array ``(2,)`` on the device,
        #: set by a compiled training step (which draws them from :attr:`generator` ahead,
        #: in the order this layer would); ``None``: draw them from the generator.
        self.keys: Any = None

    @contextlib.contextmanager
    def fixed_mask(self) -> Iterator[Dropout]:
        """Within the block, training passes reuse one mask (for gradient checks)."""
        previous = self._frozen
        self._frozen = True
        try:
            yield self
        finally:
            self._frozen = previous

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        """Training: ``x * mask``; inference: ``x * (1 - dropout_ratio)``; ``x``'s shape."""
        self.train_flg = bool(train_flg)
        if not self.train_flg:
            return x * (1.0 - self.dropout_ratio)
        mask = self.mask
        if not (self._frozen and mask is not None and tuple(mask.shape) == tuple(x.shape)):
            mask = self._draw(x)
        elif mask.dtype != x.dtype:
            mask = namespace(x).astype(mask, x.dtype)
        self.mask = mask
        return x * mask

    def backward(self, dout: Any) -> Any:
        """``dout * mask`` (training pass) or ``dout * (1 - dropout_ratio)`` (inference)."""
        if not self.train_flg:
            return dout * (1.0 - self.dropout_ratio)
        self.require_forward(self.mask)
        return dout * self.mask

    def _draw(self, x: Any) -> Any:
        xp = namespace(x)
        require_float(xp, x, "Dropout input x")
        if self.device_masks:
            keep = self._device_keep(xp, x)
        else:
            # float64 draws whatever x's dtype: float32 and float64 runs share their masks.
            host = self.generator.random(tuple(x.shape)) > self.dropout_ratio
            keep = xp.asarray(host, device=device(x))
        return xp.astype(keep, x.dtype)

    def _device_keep(self, xp: Any, x: Any) -> Any:
        shape, dev = tuple(x.shape), device(x)
        index = self._index
        if index is None or tuple(index.shape) != shape or device(index) != dev:
            n = math.prod(shape)
            index = xp.reshape(xp.arange(n, dtype=xp.int32, device=dev), shape)
            self._index = index
        if self.keys is None:
            # Two fresh 32-bit keys per call from the host generator (scalars, no array copy).
            k1, k2 = (int(k) for k in self.draw_keys())
        else:
            k1, k2 = self.keys[0], self.keys[1]
        h = _hash32(_hash32(index ^ k1) ^ k2)
        u24 = (h >> 8) & (_U24 - 1)  # uniform integers in [0, 2**24)
        # u > ratio with u = u24 / 2**24  <=>  u24 > floor(ratio * 2**24), exactly.
        return u24 > math.floor(self.dropout_ratio * _U24)

    def draw_keys(self) -> Any:
        """The two keys of the next device mask, drawn from :attr:`generator` (host ints)."""
        return self.generator.integers(-(2**31), 2**31, size=2)


def check_ratio(dropout_ratio: Any) -> float:
    """``dropout_ratio`` as a float; ``ValueError`` unless a number in ``[0, 1)``."""
    if isinstance(dropout_ratio, bool) or not (
        isinstance(dropout_ratio, numbers.Real) and 0.0 <= dropout_ratio < 1.0
    ):
        raise ValueError(
            f"dropout_ratio must be a number in [0, 1), got {dropout_ratio!r} (it is the "
            "probability of dropping a unit)"
        )
    return float(dropout_ratio)


def _hash32(h: Any) -> Any:
    """The ``lowbias32`` integer hash (C. Wellons) on int32 arrays, bit for bit.

    Products wrap modulo 2**32 on every backend; ``>>`` on signed integers is arithmetic,
    so each shift is masked to make it the logical shift the hash is defined with, and the
    second multiplier ``0x846ca68b`` is written as its signed 32-bit value.
    """
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * 0x7FEB352D
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * -0x7B935975
    return h ^ ((h >> 16) & 0xFFFF)
