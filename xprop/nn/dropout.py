"""Dropout (ch. 6.4.3, Srivastava et al., arXiv:1207.0580), the book's layer, and where its
masks come from.

In training each unit is kept with probability ``1 - dropout_ratio`` and zeroed otherwise,
without rescaling; at inference every output is multiplied by ``1 - dropout_ratio`` instead
(the book's convention, not the "inverted dropout" most libraries use).

The standard has no random numbers, so a mask comes from a *mask source*, an object the
layer calls with the input and the ratio:

- :class:`HostMasks` (the default): the book's ``uniform[0, 1) > ratio``, drawn by a seeded
  NumPy generator on the host and copied to the device — one seed, the same masks on every
  backend;
- :class:`DeviceMasks` (``device_masks=True``): a counter-based hash of each element's
  index with two keys drawn from that generator, computed on the device in standard
  integer operations (no host work, no copy per step: it pays on GPUs) — one seed, the same
  masks on every backend, but not the host masks;
- :class:`FixedMasks`: the layer's last mask, reused while the input's shape stays
  (gradient checks need the layer to be a fixed function: :meth:`Dropout.fixed_mask`).

A compiled training step hands the layer a source of its own (keys drawn ahead, inputs of
the compiled program: :mod:`xprop.training.compiled`); the layer never knows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import device

from xprop._constants import element_index
from xprop._namespace import namespace
from xprop.checks import check_flag, check_fraction, require_float
from xprop.nn.layer import Layer
from xprop.typing import Array, Namespace

__all__ = ["DeviceMasks", "Dropout", "FixedMasks", "HostMasks", "check_ratio", "hash_masks"]

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
        Draw the masks on the device (:class:`DeviceMasks`), not on the host.

    Notes
    -----
    ``forward(x, train_flg=True)`` takes floating ``x`` of any shape.  Training: keeps the
    mask (0/1 in ``x``'s dtype) in ``mask`` and returns ``x * mask``; inference returns
    ``x * (1 - dropout_ratio)``.  ``backward(dout)`` returns ``dout * mask`` after a
    training pass and ``dout * (1 - dropout_ratio)`` after an inference pass.  ``masks`` is
    the mask source.
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
        # The mask source: ``masks(x, ratio)`` is a 0/1 mask in ``x``'s shape and dtype.
        self.masks: Callable[[Array, float], Array] = (DeviceMasks if device_masks else HostMasks)(
            generator, seed
        )
        self.mask: Array = None
        self.train_flg = True

    def forward(self, x: Array, train_flg: bool = True) -> Array:
        self.train_flg = check_flag(train_flg, "train_flg")
        if not self.train_flg:
            return x * (1.0 - self.dropout_ratio)
        self.mask = self.masks(x, self.dropout_ratio)
        return x * self.mask

    def backward(self, dout: Array) -> Array:
        if not self.train_flg:
            return dout * (1.0 - self.dropout_ratio)
        self.require_forward(self.mask)
        return dout * self.mask

    def fixed_mask(self) -> FixedMasks:
        """``with layer.fixed_mask():`` training passes reuse one mask (for gradient checks)."""
        return FixedMasks(self)


class HostMasks:
    """The book's masks: ``uniform[0, 1) > ratio`` drawn on the host, copied to ``x``'s device.

    ``generator``: a ``numpy.random.Generator``; ``None`` makes one from ``seed``.  Draws are
    float64 whatever ``x``'s dtype, so float32 and float64 runs share their masks.
    """

    def __init__(self, generator: Any = None, seed: int | None = None) -> None:
        if generator is None:
            from xprop.backend import get_backend  # creation asks the backend module

            generator = get_backend("numpy").rng(seed).generator
        elif not callable(getattr(generator, "random", None)):
            raise TypeError(
                f"generator must be a numpy.random.Generator (e.g. backend.rng(seed)"
                f".generator), got {type(generator).__name__}"
            )
        self.generator = generator

    def __call__(self, x: Array, ratio: float) -> Array:
        xp = _float_namespace(x)
        keep = self.generator.random(tuple(x.shape)) > ratio
        return xp.astype(xp.asarray(keep, device=device(x)), x.dtype)

    def keys(self) -> tuple[int, int]:
        """Two 32-bit keys from the generator: what one device mask hashes with."""
        k1, k2 = self.generator.integers(-(2**31), 2**31, size=2)
        return int(k1), int(k2)


class DeviceMasks(HostMasks):
    """Masks hashed on the device (:func:`hash_masks`), two host keys per mask."""

    def __call__(self, x: Array, ratio: float) -> Array:
        return hash_masks(_float_namespace(x), x, ratio, *self.keys())


class FixedMasks:
    """While entered (``with FixedMasks(layer):``), ``layer`` reuses its last mask, or the
    first one its own source draws, for every input of that shape."""

    def __init__(self, layer: Dropout) -> None:
        self.layer, self.source = layer, layer.masks

    def __enter__(self) -> Dropout:
        self.layer.masks = self
        return self.layer

    def __exit__(self, *exc: object) -> None:
        self.layer.masks = self.source

    def __call__(self, x: Array, ratio: float) -> Array:
        mask = self.layer.mask
        if mask is None or tuple(mask.shape) != tuple(x.shape):
            mask = self.source(x, ratio)
        return mask if mask.dtype == x.dtype else namespace(x).astype(mask, x.dtype)


def hash_masks(xp: Namespace, x: Array, ratio: float, k1: int | Array, k2: int | Array) -> Array:
    """The keep-mask of a device-drawn dropout, 0/1 in ``x``'s dtype and shape.

    Each element's flat index is hashed with the keys ``k1``, ``k2`` (Python ints, or
    int32 0-d arrays on the device: inputs of a compiled program): ``u24`` is the hash's
    top 24 bits, uniform in ``[0, 2**24)``, and the element is kept when
    ``u24 / 2**24 > ratio``, which is ``u24 > floor(ratio * 2**24)`` exactly.
    """
    h = _hash32(_hash32(element_index(xp, x, tuple(x.shape)) ^ k1) ^ k2)
    u24 = (h >> 8) & (_U24 - 1)
    return xp.astype(u24 > math.floor(ratio * _U24), x.dtype)


def check_ratio(dropout_ratio: Any) -> float:
    """``dropout_ratio`` as a float; ``ValueError`` unless a number in ``[0, 1)``."""
    why = " (it is the probability of dropping a unit)"
    return check_fraction(dropout_ratio, "dropout_ratio", why=why)


def _float_namespace(x: Array) -> Namespace:
    xp = namespace(x)
    require_float(xp, x, "Dropout input x")
    return xp


def _hash32(h: Any) -> Array:
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
