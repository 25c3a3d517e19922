"""The book's convolution layer (ch. 7): one matrix product over im2col's columns."""

from __future__ import annotations

from xprop._constants import ones
from xprop._namespace import namespace
from xprop.checks import check_flag, require_array, require_float
from xprop.nn.im2col import check_geometry, col2im_t, im2col_t, output_size
from xprop.nn.layer import Layer, check_bias
from xprop.typing import Array

__all__ = ["Convolution"]


class Convolution(Layer):
    """2-D convolution (cross-correlation, as in the book) of a batch of images.

    Parameters
    ----------
    W : array ``(FN, C, FH, FW)``
        Filters, floating: their dtype is the layer's dtype.
    b : array ``(FN,)`` or None
        Bias, ``W``'s dtype; ``None`` for none (``db`` stays ``None``).
    stride : int
        At least 1.
    pad : int
        Zero rows and columns on every side of the input, at least 0.
    input_grad : bool
        Whether :meth:`backward` computes ``dx`` (the first layer of a network needs none;
        ``backward`` then returns ``None``).

    Notes
    -----
    ``forward(x)`` takes ``x`` ``(N, C, H, W)`` in ``W``'s dtype and returns ``(N, FN, OH,
    OW)``, ``OH = (H + 2*pad - FH) // stride + 1`` (likewise ``OW``).  With ``col`` the
    column matrix ``(C*FH*FW, N*OH*OW)`` and ``col_W = W.reshape(FN, -1)`` (the
    transposes of the book's), the output is ``col_W @ col + b``; ``backward(dout)`` with
    ``dout`` ``(N, FN, OH, OW)``, reshaped to ``d`` ``(FN, N*OH*OW)``, sets

    - ``dW = (d @ col.T).reshape(W.shape)``,
    - ``db = sum of d over its columns`` (``(FN,)``),

    and returns ``dx = col2im(col_W.T @ d)``, col2im being im2col's adjoint.

    Raises
    ------
    TypeError
        Non-arrays, non-floating ``W``, an ``x``/``b``/``dout`` of another dtype, a
        non-integer stride or pad.
    ValueError
        ``W`` not 4-D, ``b`` not ``(FN,)``, stride < 1 or pad < 0, ``x`` not ``(N, C, H,
        W)`` or with another ``C`` than ``W``, a filter larger than the padded input,
        ``dout`` not the output's shape.
    RuntimeError
        ``backward`` before ``forward``.
    """

    param_names = ("W", "b")

    def __init__(
        self,
        W: Array,
        b: Array | None = None,
        stride: int = 1,
        pad: int = 0,
        *,
        input_grad: bool = True,
    ) -> None:
        check_filters(W, b)
        self.W = W
        self.b = b
        self.stride, self.pad = check_geometry(stride, pad, "Convolution")
        self.input_grad = check_flag(input_grad, "input_grad")
        # kept by forward for backward
        self.x: Array = None
        self.col: Array = None
        self.col_W: Array = None
        self._out_shape: tuple[int, ...] | None = None
        # gradients of the filters and the bias
        self.dW: Array = None
        self.db: Array = None

    def forward(self, x: Array) -> Array:
        W, b = self.W, self.b
        FN, _, FH, FW = W.shape
        shape = tuple(getattr(x, "shape", ()))
        if self.checks and hasattr(x, "shape") and len(shape) != 4:
            output_size(shape, FH, FW, self.stride, self.pad, "Convolution")  # raises
        xp = self.check_input(x, W, owner="the layer's W")
        if self.checks:
            self._check_x(x)
        N = x.shape[0]
        OH, OW = output_size(shape, FH, FW, self.stride, self.pad, "Convolution")
        try:
            col = im2col_t(xp, x, FH, FW, self.stride, self.pad)  # (C*FH*FW, N*OH*OW)
        except Exception as exc:  # the library's own out-of-memory error names nothing
            raise_if_out_of_memory(exc, (x.shape[1] * FH * FW, N * OH * OW), x)
            raise
        col_W = xp.reshape(W, (FN, -1))
        out = col_W @ col
        if b is not None:
            out = out + xp.reshape(b, (FN, 1))
        self.x, self.col, self.col_W = x, col, col_W
        self._out_shape = (N, FN, OH, OW)
        return xp.permute_dims(xp.reshape(out, (FN, N, OH, OW)), (1, 0, 2, 3))

    def backward(self, dout: Array) -> Array | None:
        x = self.x
        xp = self.check_dout(dout, self._out_shape, x)
        FN = self.W.shape[0]
        d = xp.reshape(xp.permute_dims(dout, (1, 0, 2, 3)), (FN, -1))  # (FN, N*OH*OW)
        self.dW = xp.reshape(d @ self.col.T, self.W.shape)
        self.db = None if self.b is None else d @ ones(xp, d, (d.shape[1],))
        if not self.input_grad:
            return None
        dcol = self.col_W.T @ d  # (C*FH*FW, N*OH*OW)
        _, _, FH, FW = self.W.shape
        return col2im_t(xp, dcol, tuple(x.shape), FH, FW, self.stride, self.pad)

    def _check_x(self, x: Array) -> None:
        W = self.W
        if x.ndim == 4 and x.shape[1] != W.shape[1]:
            raise ValueError(
                f"Convolution input has {x.shape[1]} channels (shape {tuple(x.shape)}) but "
                f"the filters W of shape {tuple(W.shape)} expect {W.shape[1]}; pass images "
                f"of shape (N, {W.shape[1]}, H, W) or build W with {x.shape[1]} channels"
            )
        b = self.b
        if b is not None and (tuple(b.shape) != (W.shape[0],) or b.dtype != W.dtype):
            check_filters(W, b)  # a bias set after construction: says what is wrong


def raise_if_out_of_memory(exc: Exception, shape: tuple[int, int], x: Array) -> None:
    """Raise ``MemoryError`` naming the layer, the column matrix's size and the fix when
    ``exc`` is a library's out-of-memory error (NumPy's and CuPy's ``MemoryError``,
    PyTorch's and JAX's ``RuntimeError``/``XlaRuntimeError`` saying so)."""
    text = str(exc).lower()
    if not isinstance(exc, MemoryError) and not any(
        words in text for words in ("out of memory", "can't allocate", "resource_exhausted")
    ):
        return
    itemsize = {"float16": 2, "float32": 4}.get(str(x.dtype).rsplit(".", 1)[-1], 8)
    gib = shape[0] * shape[1] * itemsize / 2**30
    raise MemoryError(
        f"Convolution: the column matrix of this batch of {x.shape[0]} images (input shape "
        f"{tuple(x.shape)}), {shape[0]} x {shape[1]} values, takes {gib:.1f} GiB, more than "
        "there is; pass fewer images at a time (smaller batches; net.accuracy(x, t, "
        "batch_size=100) scores in chunks)"
    ) from exc


def check_filters(W: Array, b: Array) -> None:
    """Raise unless ``W`` is a floating ``(FN, C, FH, FW)`` array and ``b`` ``None``/``(FN,)``."""
    require_array(W, "Convolution filters W")
    xp = namespace(W, b)
    require_float(xp, W, "Convolution filters W")
    if W.ndim != 4:
        raise ValueError(
            f"Convolution filters W must have shape (FN, C, FH, FW), got shape "
            f"{tuple(W.shape)}; e.g. 30 filters of 5x5 over 1 channel: shape (30, 1, 5, 5)"
        )
    if b is None:
        return
    check_bias(xp, W, b, W.shape[0], "Convolution")
