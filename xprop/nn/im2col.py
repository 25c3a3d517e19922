"""im2col and col2im (ch. 7): a convolution as one matrix product, and its adjoint.

``im2col`` lays every filter-sized window of an image batch out as a column, so that a
convolution is a matrix product of the flattened filters with that column matrix;
``col2im`` is its adjoint (transpose), which adds each column back onto the window it
came from: the gradient of the loss with respect to the image, given the gradient with
respect to the columns.  Where windows overlap (stride smaller than the filter) the
contributions add.

Only the standard is used: no ``__setitem__`` (JAX arrays are immutable), no ``pad`` (zero
blocks are concatenated), and every slice stops exactly at its last element
(array-api-strict rejects the book's out-of-bounds stops).  The layers use the columns
transposed, ``(C*FH*FW, N*OH*OW)`` (:func:`im2col_t`, :func:`col2im_t`: each product of
the convolution is then one matrix product without a transpose), built with one ``stack``
of the ``FH*FW`` strided views of the padded input (:func:`window_views`; their adjoint,
:func:`add_views`, is what pooling's backward needs too); :func:`im2col` and
:func:`col2im` give the book's ``(N*OH*OW, C*FH*FW)``.
"""

from __future__ import annotations

import numbers
from typing import Any

from array_api_compat import device as _device

from xprop._namespace import namespace
from xprop.checks import check_count, require_array
from xprop.typing import Array, Namespace

__all__ = ["col2im", "im2col"]


def output_size(
    shape: tuple[int, ...], filter_h: int, filter_w: int, stride: int, pad: int, who: str
) -> tuple[int, int]:
    """``(OH, OW)`` of windows ``filter_h x filter_w`` over ``shape`` ``(N, C, H, W)``.

    ``OH = (H + 2*pad - filter_h) // stride + 1`` (likewise ``OW``).  Raises ``ValueError``
    naming ``who`` unless ``shape`` is 4-D and the filter fits the padded input.
    """
    if len(shape) != 4:
        raise ValueError(
            f"{who} input must have shape (N, C, H, W), got shape {tuple(shape)}; add the "
            "missing batch or channel axis, e.g. xp.reshape(x, (N, 1, 28, 28))"
        )
    _, _, h, w = shape
    hp, wp = h + 2 * pad, w + 2 * pad
    if filter_h > hp or filter_w > wp:
        raise ValueError(
            f"{who}: the window {filter_h}x{filter_w} is larger than the padded input "
            f"{hp}x{wp} (H + 2*pad, W + 2*pad with H, W = {h}, {w} and pad = {pad}), so the "
            "output size would be zero; use a smaller window, more padding or a larger input"
        )
    return (hp - filter_h) // stride + 1, (wp - filter_w) // stride + 1


def check_geometry(stride: Any, pad: Any, who: str) -> tuple[int, int]:
    """``(stride, pad)`` as ints: ``stride >= 1``, ``pad >= 0``; else a clear error."""
    stride = check_count(stride, f"{who} stride", minimum=1)
    pad = check_count(pad, f"{who} pad", minimum=0)
    return stride, pad


def check_size(value: Any, name: str) -> int:
    """A window side: an integer ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return check_count(value, name, minimum=1)


def pad_blocks(xp: Namespace, x: Array, pad: int, value: float = 0.0) -> Array:
    """``x`` ``(..., H, W)`` with ``pad`` rows and columns of ``value`` on every side.

    The standard has no ``pad``: blocks of ``value`` are concatenated.
    """
    if pad == 0:
        return x
    *lead, h, w = x.shape
    dev = _device(x)
    rows = xp.full((*lead, pad, w), value, dtype=x.dtype, device=dev)
    x = xp.concat((rows, x, rows), axis=-2)
    cols = xp.full((*lead, h + 2 * pad, pad), value, dtype=x.dtype, device=dev)
    return xp.concat((cols, x, cols), axis=-1)


def window_views(
    xp: Namespace, xpad: Array, filter_h: int, filter_w: int, stride: int
) -> list[Array]:
    """The ``FH*FW`` strided views of padded ``xpad`` ``(A, B, Hp, Wp)``, row-major.

    View ``(i, j)`` is ``xpad[..., i + stride*oh, j + stride*ow]`` for every output
    position ``(oh, ow)``: shape ``(A, B, OH, OW)``.  Slice stops are exact.
    """
    hp, wp = xpad.shape[-2:]
    oh = (hp - filter_h) // stride + 1
    ow = (wp - filter_w) // stride + 1
    span_h, span_w = (oh - 1) * stride + 1, (ow - 1) * stride + 1
    return [
        xpad[..., i : i + span_h : stride, j : j + span_w : stride]
        for i in range(filter_h)
        for j in range(filter_w)
    ]


def im2col_t(
    xp: Namespace, x: Array, filter_h: int, filter_w: int, stride: int, pad: int
) -> Array:
    """The book's ``im2col(x)`` transposed: the column matrix ``(C*FH*FW, N*OH*OW)``.

    Row ``(c, i, j)``, column ``(n, oh, ow)`` holds ``xpad[n, c, i + stride*oh, j +
    stride*ow]``: one ``stack`` of the strided views of the zero-padded input, laid out so
    that the convolution, ``dW`` and ``dcol`` are each one matrix product.
    """
    n, c = x.shape[:2]
    xt = pad_blocks(xp, xp.permute_dims(x, (1, 0, 2, 3)), pad)  # (C, N, Hp, Wp)
    views = window_views(xp, xt, filter_h, filter_w, stride)
    oh, ow = views[0].shape[-2:]
    col = xp.stack(views, axis=1)  # (C, FH*FW, N, OH, OW)
    return xp.reshape(col, (c * filter_h * filter_w, n * oh * ow))


def _dilate(xp: Namespace, a: Any, stride: int, axis: int) -> Array:
    """``a`` dilated by ``stride`` along ``axis`` (-2 or -1): ``stride - 1`` zeros between
    its elements (a strided window's gradient laid out on the input's grid)."""
    if stride == 1:
        return a
    zeros = xp.zeros(a.shape, dtype=a.dtype, device=_device(a))
    dilated = xp.stack([a] + [zeros] * (stride - 1), axis=axis)  # value, then zeros
    shape = list(a.shape)
    shape[axis] *= stride
    dilated = xp.reshape(dilated, tuple(shape))
    keep = (a.shape[axis] - 1) * stride + 1
    return dilated[..., :keep, :] if axis == -2 else dilated[..., :keep]


def _zero_pad(xp: Namespace, a: Any, top: int, bottom: int, left: int, right: int) -> Array:
    """``a`` ``(..., h, w)`` with zero blocks on each side (any may be 0)."""
    dev = _device(a)
    *lead, h, w = a.shape
    parts = []
    if top:
        parts.append(xp.zeros((*lead, top, w), dtype=a.dtype, device=dev))
    parts.append(a)
    if bottom:
        parts.append(xp.zeros((*lead, bottom, w), dtype=a.dtype, device=dev))
    a = xp.concat(parts, axis=-2) if len(parts) > 1 else a
    h = a.shape[-2]
    parts = []
    if left:
        parts.append(xp.zeros((*lead, h, left), dtype=a.dtype, device=dev))
    parts.append(a)
    if right:
        parts.append(xp.zeros((*lead, h, right), dtype=a.dtype, device=dev))
    return xp.concat(parts, axis=-1) if len(parts) > 1 else a


def add_views(
    xp: Namespace, slabs: list[Array], size: tuple[int, int], filter_w: int, stride: int, pad: int
) -> Array:
    """The adjoint of :func:`window_views`: add each view's values back where they were read
    (PyTorch calls this ``fold``).

    ``slabs[i * filter_w + j]`` ``(A, B, OH, OW)`` is the gradient of view ``(i, j)``;
    the result ``(A, B, H, W)`` (``size`` = ``(H, W)``) is their sum, each dilated with
    zeros by the stride, shifted to its offset in the padded input, and the padding cropped.
    """
    h, w = size
    hp, wp = h + 2 * pad, w + 2 * pad
    total: Any = None  # the sum of the slabs so far
    for k, slab in enumerate(slabs):
        i, j = divmod(k, filter_w)
        s = _dilate(xp, _dilate(xp, slab, stride, -2), stride, -1)
        sh, sw = s.shape[-2:]
        s = _zero_pad(xp, s, i, hp - i - sh, j, wp - j - sw)
        total = s if total is None else total + s
    if pad:
        total = total[..., pad : pad + h, pad : pad + w]
    return total


def col2im_t(
    xp: Namespace,
    col: Array,
    shape: tuple[int, int, int, int],
    filter_h: int,
    filter_w: int,
    stride: int,
    pad: int,
) -> Array:
    """The book's ``col2im`` of the transposed columns, the adjoint of :func:`im2col_t`:
    ``col`` ``(C*FH*FW, N*OH*OW)`` to ``(N, C, H, W)``."""
    n, c, h, w = shape
    oh, ow = output_size(shape, filter_h, filter_w, stride, pad, "col2im")
    col6 = xp.reshape(col, (c, filter_h, filter_w, n, oh, ow))
    slabs = [col6[:, i, j, ...] for i in range(filter_h) for j in range(filter_w)]
    return xp.permute_dims(add_views(xp, slabs, (h, w), filter_w, stride, pad), (1, 0, 2, 3))


def im2col(
    input_data: Array, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0
) -> Array:
    """The book's ``im2col``: every window of ``input_data`` as a row.

    Parameters
    ----------
    input_data : array ``(N, C, H, W)``
        Image batch, any dtype.
    filter_h, filter_w : int
        Window size, at least 1 and at most the padded input's size.
    stride : int
        At least 1.
    pad : int
        Zero rows and columns added on every side, at least 0.

    Returns
    -------
    array ``(N*OH*OW, C*FH*FW)``
        Row ``(n, oh, ow)``, column ``(c, i, j)`` holds the zero-padded input at ``(n, c, i +
        stride*oh, j + stride*ow)``; ``OH = (H + 2*pad - FH) // stride + 1``, likewise
        ``OW``.  A convolution is then ``col @ W.reshape(FN, -1).T``, a linear map of the
        input whose adjoint is :func:`col2im`.

    Raises
    ------
    TypeError
        A non-array, a non-integer size, stride or pad.
    ValueError
        Input not 4-D, a window larger than the padded input, stride < 1, pad < 0.
    """
    require_array(input_data, "im2col input_data")
    xp = namespace(input_data)
    filter_h, filter_w = check_size(filter_h, "filter_h"), check_size(filter_w, "filter_w")
    stride, pad = check_geometry(stride, pad, "im2col")
    output_size(tuple(input_data.shape), filter_h, filter_w, stride, pad, "im2col")
    return im2col_t(xp, input_data, filter_h, filter_w, stride, pad).T


def col2im(
    col: Array,
    input_shape: tuple[int, int, int, int],
    filter_h: int,
    filter_w: int,
    stride: int = 1,
    pad: int = 0,
) -> Array:
    """The book's ``col2im``: the adjoint of :func:`im2col`, shape ``input_shape``.

    ``col`` ``(N*OH*OW, C*FH*FW)`` holds one value per window element; each is added to
    the input element it was read from (overlapping windows add up) and the padding is
    dropped.  So ``sum(im2col(x) * c) == sum(x * col2im(c))`` for every ``x`` and ``c``:
    given ``c = dL/dcol``, ``col2im(c)`` is ``dL/dx``.

    Raises ``ValueError`` when ``input_shape`` is not ``(N, C, H, W)``, the window does not
    fit it, or ``col``'s shape does not match it; ``TypeError`` as :func:`im2col`.
    """
    require_array(col, "col2im col")
    xp = namespace(col)
    filter_h, filter_w = check_size(filter_h, "filter_h"), check_size(filter_w, "filter_w")
    stride, pad = check_geometry(stride, pad, "col2im")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise ValueError(
            f"col2im: input_shape must be the image batch's shape (N, C, H, W), got "
            f"{input_shape!r}"
        )
    n, c, h, w = (check_count(s, f"col2im input_shape[{i}]") for i, s in enumerate(input_shape))
    shape = (n, c, h, w)
    oh, ow = output_size(shape, filter_h, filter_w, stride, pad, "col2im")
    want = (shape[0] * oh * ow, shape[1] * filter_h * filter_w)
    if tuple(col.shape) != want:
        raise ValueError(
            f"col2im: col has shape {tuple(col.shape)} but input_shape {shape} with a "
            f"{filter_h}x{filter_w} window, stride {stride} and pad {pad} gives columns of "
            f"shape {want} (N*OH*OW, C*FH*FW); pass the im2col output of that input"
        )
    return col2im_t(xp, col.T, shape, filter_h, filter_w, stride, pad)
