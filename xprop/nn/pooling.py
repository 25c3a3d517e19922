"""The book's max-pooling layer (ch. 7), without im2col: the max over strided views."""

from __future__ import annotations

from typing import Any

from array_api_compat import device as _device

from xprop._constants import zero
from xprop.nn.im2col import (
    add_views,
    check_geometry,
    check_size,
    output_size,
    pad_blocks,
    window_views,
)
from xprop.nn.layer import Layer
from xprop.typing import Array, Namespace

__all__ = ["Pooling"]


class Pooling(Layer):
    """Max pooling over ``pool_h x pool_w`` windows of a batch of images.

    Parameters
    ----------
    pool_h, pool_w : int
        Window size, at least 1.
    stride : int
        At least 1 (the book's networks use ``stride == pool_h == pool_w``).
    pad : int
        Rows and columns of ``-inf`` on every side, at least 0 and smaller than the window
        (``pad < pool_h`` and ``pad < pool_w``, so every window holds an input element).
        The padding never wins a maximum and is counted in the output size, as in
        PyTorch's ``max_pool2d``; the book pads with zeros and leaves ``pad`` out of its
        output size, which is inconsistent for ``pad > 0`` (identical for ``pad == 0``).

    Notes
    -----
    ``forward(x)`` takes floating ``x`` ``(N, C, H, W)`` and returns ``(N, C, OH, OW)``,
    ``OH = (H + 2*pad - pool_h) // stride + 1`` (likewise ``OW``): the elementwise maximum
    of the ``pool_h*pool_w`` strided views of the padded input, one per window offset.

    ``backward(dout)`` gives each window's ``dout`` to the *first* maximum of the window in
    row-major order, as the book's ``argmax`` does, ties included (common after ReLU: an
    all-zero window sends its gradient to its top-left element); the result is exactly the
    book's.  Where windows overlap (``stride`` smaller than the window) the contributions
    add, as the book's ``col2im`` adds them.  With ``stride == pool_h == pool_w`` and no
    padding the windows tile the input and the gradients are interleaved, not added.

    Raises
    ------
    TypeError
        A non-integer window, stride or pad; a non-array or non-floating ``x``.
    ValueError
        A window < 1, stride < 1, pad < 0 or not smaller than the window, ``x`` not ``(N,
        C, H, W)``, a window larger than the padded input, ``dout`` not the output's shape.
    RuntimeError
        ``backward`` before ``forward``.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 1, pad: int = 0) -> None:
        self.pool_h = check_size(pool_h, "Pooling pool_h")
        self.pool_w = check_size(pool_w, "Pooling pool_w")
        self.stride, self.pad = check_geometry(stride, pad, "Pooling")
        if self.pad >= min(self.pool_h, self.pool_w):
            raise ValueError(
                f"Pooling pad must be smaller than the window, got pad={self.pad} with a "
                f"{self.pool_h}x{self.pool_w} window: a window of padding only has no "
                f"maximum; use pad <= {min(self.pool_h, self.pool_w) - 1}"
            )
        self.x: Array = None
        self.out: Array = None

    def forward(self, x: Array) -> Array:
        ph, pw, s, p = self.pool_h, self.pool_w, self.stride, self.pad
        if self.checks and hasattr(x, "shape"):
            output_size(tuple(x.shape), ph, pw, s, p, "Pooling")  # 4-D, window fits
        xp = self.check_input(x)
        views = window_views(xp, pad_blocks(xp, x, p, float("-inf")), ph, pw, s)
        out = views[0]
        for v in views[1:]:
            out = xp.maximum(out, v)
        self.x, self.out = x, out
        return out

    def backward(self, dout: Array) -> Array:
        x, out = self.x, self.out
        xp = self.check_dout(dout, None if out is None else out.shape, x)
        ph, pw, s, p = self.pool_h, self.pool_w, self.stride, self.pad
        views = window_views(xp, pad_blocks(xp, x, p, float("-inf")), ph, pw, s)
        grads = []
        taken = None  # windows whose first maximum came already
        for v in views:
            first = v == out
            if taken is not None:
                first = first & ~taken
            taken = first if taken is None else taken | first
            grads.append(xp.where(first, dout, zero(xp, dout)))  # inf dout: 0, not NaN
        H, W = x.shape[-2:]
        if s == ph == pw and p == 0:
            return _interleave(xp, grads, ph, pw, (H, W))
        return add_views(xp, grads, (H, W), pw, s, p)


def _interleave(xp: Namespace, grads: list[Any], ph: int, pw: int, size: tuple[int, int]) -> Array:
    """Tiling windows: ``grads[i*pw + j]`` ``(N, C, OH, OW)`` to ``x[..., i::ph, j::pw]``.

    Rows and columns the windows do not reach (``H`` not a multiple of ``ph``) get zeros.
    """
    N, C, OH, OW = grads[0].shape
    rows = [
        xp.reshape(xp.stack(grads[i * pw : (i + 1) * pw], axis=-1), (N, C, OH, OW * pw))
        for i in range(ph)
    ]
    dx = xp.reshape(xp.stack(rows, axis=-2), (N, C, OH * ph, OW * pw))
    H, W = size
    if OH * ph < H:
        fill = xp.zeros((N, C, H - OH * ph, OW * pw), dtype=dx.dtype, device=_device(dx))
        dx = xp.concat((dx, fill), axis=-2)
    if OW * pw < W:
        fill = xp.zeros((N, C, H, W - OW * pw), dtype=dx.dtype, device=_device(dx))
        dx = xp.concat((dx, fill), axis=-1)
    return dx
