"""The base class of layers: what every layer shares, written once.

A layer is a node of the computational graph with the book's two methods: ``forward``
computes the output and keeps what ``backward`` needs; ``backward(dout)`` takes the
gradient of the loss with respect to the output and returns the gradients with respect to
the inputs, setting ``d<name>`` for each of its parameters (``Affine.dW``, ``Affine.db``).
Subclasses write those two methods as the book does; the checks live here:

- :meth:`Layer.check_input` — an input is an array of a floating dtype (the parameters'
  library, device and dtype where the layer has parameters), with a batch axis and the
  number of features the layer expects (the rule of :func:`xprop.checks.check_batch`);
- :meth:`Layer.check_dout` — ``backward`` came after a ``forward``, and ``dout`` has the
  output's shape;

each costs a few attribute reads and comparisons, so a layer used alone checks every
call.  Inside a network the network checks its input once, where the data enter
(:meth:`xprop.nets.network.Network.predict`), and its layers trust what their neighbours
hand them: :meth:`~xprop.nets.network.Network.link` turns their :attr:`Layer.checks` off.
The class attributes say what a network
needs to know about a layer: which attributes are trained parameters (``param_names``),
which are state kept between calls but not trained (``buffer_names``, e.g. BatchNorm's
running statistics), and whether ``forward`` takes the training flag
(``takes_train_flg``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from xprop._namespace import dtype_name, namespace
from xprop.checks import check_batch, require_array, require_float, require_same_float
from xprop.typing import Array, Namespace

__all__ = ["Layer", "check_bias"]


class Layer:
    """Base class of xprop's layers (and of a user's own).

    Class attributes
    ----------------
    param_names : tuple of str
        Names of the attributes holding trained parameters (``("W", "b")`` for Affine); the
        gradient of parameter ``W`` is kept in attribute ``dW`` after ``backward``.
    buffer_names : tuple of str
        Names of attributes holding state that inference needs but training does not
        update by gradient (``("running_mean", "running_var")`` for BatchNorm).
    takes_train_flg : bool
        Whether ``forward(x, train_flg)`` takes the book's training flag (Dropout,
        BatchNormalization).
    """

    #: Whether :meth:`check_input` and :meth:`check_dout` check (a layer used alone does).
    #: A network turns it off in its layers (:meth:`~xprop.nets.network.Network.link`):
    #: their inputs and upstream gradients come from its own layers, checked at its door.
    checks: bool = True

    param_names: ClassVar[tuple[str, ...]] = ()
    buffer_names: ClassVar[tuple[str, ...]] = ()
    takes_train_flg: ClassVar[bool] = False

    if TYPE_CHECKING:
        # The book's two methods, which every layer defines with its own arguments: declared
        # for type checkers only (``for layer in layers: x = layer.forward(x)``), so a layer
        # without them still fails as it always did, with an AttributeError.
        def forward(self, *args: Any, **kwargs: Any) -> Any: ...

        def backward(self, *args: Any, **kwargs: Any) -> Any: ...

    def check_input(
        self,
        x: Array,
        like: Array | None = None,
        features: int | None = None,
        owner: str = "the layer's parameters",
    ) -> Namespace:
        """Raise a clear error unless ``x`` is a floating batch ``(N, ...)``; its namespace.

        ``like``: the parameter whose library, device and dtype ``x`` must share (the
        parameters decide the dtype on every backend), named ``owner`` in messages (``"the
        layer's W"``).  ``features``: the number of values per sample, ``d1 * d2 * ...`` of
        ``x``'s shape ``(N, d1, d2, ...)``, which ``owner`` expects.  The rule is
        :func:`xprop.checks.check_batch`; inside a network (``checks`` off) nothing is
        checked.
        """
        if not self.checks:
            return namespace(x)
        name = type(self).__name__
        if like is None:
            xp = namespace(x)
            require_array(x, f"{name} input x")
            require_float(xp, x, f"{name} input x")
            if x.ndim < 2:
                check_batch(x, x, name, owner)  # raises the batch-axis error
            return xp
        return check_batch(x, like, name, owner, features=features)

    def require_forward(self, kept: Any) -> None:
        """Raise ``RuntimeError`` when ``kept`` (what ``forward`` keeps) is still ``None``."""
        if kept is None:
            name = type(self).__name__
            raise RuntimeError(
                f"{name}.backward was called before {name}.forward: call forward first "
                "(backward needs what the forward pass keeps)"
            )

    def check_dout(self, dout: Array, shape: Any, like: Array | None = None) -> Namespace:
        """Raise unless ``forward`` ran (``shape`` is not ``None``) and ``dout`` has ``shape``.

        ``shape`` is the output's shape, which the layer knows only after a forward pass;
        ``like``, if given, an array of the forward pass whose library and dtype ``dout``
        must share.  Returns ``dout``'s namespace.
        """
        if not self.checks:
            return namespace(dout)
        self.require_forward(shape)
        name = type(self).__name__
        got = getattr(dout, "shape", None)
        if got is None:
            raise TypeError(
                f"{name}.backward: dout must be an array of the output's shape "
                f"{tuple(shape)}, got {type(dout).__name__}"
            )
        if tuple(got) != tuple(shape):
            raise ValueError(
                f"{name}.backward: dout has shape {tuple(got)} but the output of the last "
                f"forward had shape {tuple(shape)}; pass the gradient of the loss with respect "
                "to that output (same batch size)"
            )
        xp = namespace(dout) if like is None else namespace(dout, like)  # one library
        if like is not None and dout.dtype != like.dtype:
            require_same_float(xp, dout, f"{name}.backward: dout", like.dtype, "the layer")
        return xp


def check_bias(xp: Namespace, W: Array, b: Array, units: int, who: str) -> None:
    """Raise unless the bias ``b`` is an array ``(units,)`` in the weights ``W``'s dtype.

    ``who`` names the layer in the message (``"Affine"``, ``"Convolution"``).
    """
    require_array(b, f"{who} bias b")
    if b.dtype != W.dtype:
        raise TypeError(
            f"{who} bias b has dtype {dtype_name(xp, b.dtype)} but W has "
            f"{dtype_name(xp, W.dtype)}; create both with the same backend and dtype"
        )
    if tuple(b.shape) != (units,):
        raise ValueError(
            f"{who} bias b must have shape ({units},) to match W of shape "
            f"{tuple(W.shape)}, got {tuple(b.shape)}"
        )
