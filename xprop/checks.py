"""Checks at the door: every rule an input must meet, written once, with its one message.

Data are checked where they enter — a network's :meth:`~xprop.nets.network.Network.predict`
(against what the network was built for), a layer used on its own, a public function, the
loss layer for labels, the ``Trainer`` for its data — and trusted after that: the layers
inside a network compute without asking again.  Each helper here is one rule; its message
names the value, what was expected and the fix.  Every check reads host values only
(types, dtypes, shapes, devices), except the label range check, the one documented device
read (:func:`check_label_range`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

from xprop._namespace import dtype_name, isdtype, namespace
from xprop.libraries import library_for
from xprop.typing import Array, Namespace

__all__ = [
    "check_batch",
    "check_count",
    "check_data",
    "check_flag",
    "check_fraction",
    "check_label_range",
    "check_label_shape",
    "check_model",
    "check_params",
    "check_positive",
    "check_replacements",
    "check_scores_shape",
    "device",
    "labels_are_one_hot",
    "library_name",
    "read_labels",
    "require_array",
    "require_float",
    "require_same_float",
]

# -- arrays ---------------------------------------------------------------------------------


def require_array(x: Array, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` is an array (has a dtype and a shape)."""
    if not (hasattr(x, "dtype") and hasattr(x, "shape")):
        raise TypeError(
            f"{what} must be an array, got {type(x).__name__} {x!r:.60}; convert it first "
            "with backend.asarray(...)"
        )


def require_float(xp: Namespace, x: Array, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype (names ``what`` and the fix)."""
    if not isdtype(xp, x.dtype, "real floating"):
        raise TypeError(
            f"{what} must have a floating dtype, got {x.dtype}; convert it first, e.g. "
            "backend.asarray(x, dtype='float32') or xp.astype(x, xp.float32) / 255.0"
        )


def require_same_float(xp: Namespace, x: Array, what: str, dtype: Any, owner: str) -> None:
    """Raise ``TypeError`` unless ``x`` has ``dtype``, the floating dtype of ``owner``.

    xprop's one dtype rule: the parameters decide the dtype, and an input of another
    floating dtype is an error on every backend (NumPy would silently compute in the wider
    dtype, PyTorch would refuse the matrix product).
    """
    if x.dtype != dtype:
        want = dtype_name(xp, dtype)
        raise TypeError(
            f"{what} has dtype {dtype_name(xp, x.dtype)} but {owner} is {want}: the "
            f"parameters decide the dtype; convert the input first, with backend.asarray(x) "
            f"on a {want} backend or xp.astype(x, xp.{want})"
        )


def library_name(x: Array) -> str:
    """The array library of ``x`` (``"numpy"``, ``"torch"``, ``"jax"``...): its type's package.

    Read from the type, never from the data, and without importing anything.
    """
    name = type(x).__module__.split(".")[0]
    return "jax" if name == "jaxlib" else name


def device(x: Array) -> Any:
    """``x``'s device, read from its attribute (``array_api_compat.device`` answers the same
    at several times the cost); ``None`` where it has none to read (a JAX tracer inside
    ``jax.jit``)."""
    dev = getattr(x, "device", None)  # an attribute everywhere, NumPy 1 aside (a method)
    if callable(dev):
        return "cpu" if library_name(x) == "numpy" else None
    return dev


def check_batch(
    x: Array,
    like: Array,
    who: str,
    owner: str,
    *,
    features: int | None = None,
    sample_shape: tuple[int, ...] | None = None,
) -> Namespace:
    """The rule for data entering a network or a layer; returns their namespace.

    ``x`` must be an array of ``like``'s library, device and floating dtype (``like`` is a
    parameter, named ``owner`` in messages: ``"the layer's W"``), with a batch axis:
    ``(N, ...)``.  With ``sample_shape``, each sample must have exactly that shape (a
    convolutional network's ``input_dim``); with ``features``, ``d1 * d2 * ...`` of
    ``(N, d1, d2, ...)`` must be ``features`` (a fully connected network's ``input_size``).
    ``who`` names the network or layer.
    """
    xp = namespace(x, like)  # Python lists, other libraries: the TypeError naming the fix
    if x.dtype != like.dtype:  # the parameters' dtype is floating: nothing else to ask
        require_array(x, f"{who} input x")
        require_float(xp, x, f"{who} input x")
        require_same_float(xp, x, f"{who} input x", like.dtype, owner)
    here, there = device(x), device(like)
    if here != there and None not in (here, there):
        raise ValueError(
            f"{who} input x is on device {here} but {owner} is on {there}; put the data on "
            "the network's device with backend.asarray(x)"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{who} input must be a batch of shape (N, D) or (N, d1, ...), got shape "
            f"{tuple(x.shape)}; add a batch axis, e.g. xp.reshape(x, (1, -1))"
        )
    if sample_shape is not None and tuple(x.shape[1:]) != sample_shape:
        raise ValueError(
            f"{who} was built for images of shape input_dim={sample_shape} but got x of shape "
            f"{tuple(x.shape)}; pass images of shape (N, {', '.join(map(str, sample_shape))}), "
            f"or build the network with input_dim={tuple(x.shape[1:])}"
        )
    if features is not None:
        n = math.prod(x.shape[1:])
        if n != features:
            shape = f" has shape {tuple(like.shape)} and" if hasattr(like, "shape") else ""
            raise ValueError(
                f"{who} input has {n} features per sample (shape {tuple(x.shape)}) but "
                f"{owner}{shape} expects {features}; reshape the input or build the layer "
                f"for {n} features"
            )
    return xp


def check_model(network: Any, names: tuple[str, ...]) -> None:
    """Raise ``TypeError`` unless ``network`` has each of ``names`` (what a ``Trainer``
    uses of it: ``params``, ``gradient``, ``loss``, ``accuracy``)."""
    for name in names:
        if not hasattr(network, name):
            raise TypeError(
                f"network must have {', '.join(names[:-1])} and {names[-1]} (like "
                f"xprop.MultiLayerNetExtend); {type(network).__name__} has no {name!r}"
            )


def check_params(params: Any, built: dict[str, tuple[Any, Any]], who: str) -> None:
    """Raise ``ValueError`` unless each entry of ``params`` has the shape and dtype it was
    built with (``built``: ``{key: (shape, dtype)}``): a new array for a parameter (a
    checkpoint load, the book's update on JAX) must fit the layer that takes it."""
    for key, (shape, dtype) in built.items():
        p = params[key]
        if p.shape != shape or p.dtype != dtype:
            raise ValueError(
                f"params[{key!r}] is {tuple(p.shape)} {p.dtype} but {who} was built with "
                f"{tuple(shape)} {dtype}; a new array for a parameter must keep its shape "
                "and dtype (build a new network for other sizes)"
            )


def check_data(like: Array, backend_name: str, *arrays: Array) -> Namespace:
    """The rule for a ``Trainer``'s data ``x_train, t_train, x_test, t_test``; their namespace.

    Arrays (Python lists raise ``TypeError`` naming ``backend.asarray``) of the library and
    device of ``like`` (a parameter of the network, on the backend ``backend_name``; no
    check without one), as many labels as samples, and at least one sample: the library's
    own error later, deep in a layer, would not say what to do.
    """
    xp = namespace(*arrays)  # lists, strings and mixed libraries: a clear TypeError
    for what, x, t in (("training", *arrays[:2]), ("test", *arrays[2:])):
        if x.shape[0] != t.shape[0]:
            raise ValueError(
                f"the {what} data have {x.shape[0]} samples but {t.shape[0]} labels; they "
                "must match"
            )
        if x.shape[0] == 0:
            raise ValueError(f"the {what} data are empty; pass at least one sample")
    if like is None:  # a network without parameters: nothing to compare with
        return xp
    theirs, ours = library_name(arrays[0]), library_name(like)
    if theirs != ours:
        cls = type(arrays[0])
        raise TypeError(
            f"the data are {theirs} arrays ({cls.__module__}.{cls.__qualname__}) but the "
            f"network is on {backend_name}; convert the data with network.backend.asarray(...) "
            f"(e.g. xprop.get_backend({backend_name!r}).asarray(x)) or build the network on "
            f"the data's backend (backend=xprop.get_backend({theirs!r}))"
        )
    wrong = {str(device(a)) for a in arrays if str(device(a)) != str(device(like))}
    if wrong:
        raise TypeError(
            f"the data are on {', '.join(sorted(wrong))} but the network is on "
            f"{device(like)}; put them on the network's device with "
            "network.backend.asarray(...)"
        )
    return xp


def check_replacements(
    current: dict[str, Any], new: Any, like: Array, device: Any, who: str
) -> None:
    """Raise unless ``new`` can replace the arrays ``current`` (a network's running
    statistics), key for key: the same keys, and each value (``None``: let the layer make it
    again) an array of the library and ``device`` of the network (``like`` is one of its
    parameters) with the shape and dtype of the value it replaces (where that exists).
    Everything is checked before anything may be set.
    """
    if not isinstance(new, dict) or set(new) != set(current):
        got = sorted(new) if isinstance(new, dict) else type(new).__name__
        raise ValueError(f"running statistics must have the keys {sorted(current)}, got {got}")
    fix = "pass arrays like net.running_stats() returns, e.g. net.backend.asarray(...)"
    for key, value in new.items():
        old = current[key]
        ref = like if old is None else old
        if value is None or ref is None:
            continue
        require_array(value, f"running statistic {key!r}")
        if library_name(value) != library_name(ref):
            raise TypeError(
                f"running statistic {key!r} is a {library_name(value)} array but {who} holds "
                f"{library_name(ref)} arrays; {fix}"
            )
        # The backend's device, not the current array's: JAX may have donated (deleted)
        # that one to a compiled step.  A JAX tracer inside jax.jit has no device.
        dev = getattr(value, "device", None)
        if not callable(dev) and None not in (dev, device) and dev != device:
            raise ValueError(
                f"running statistic {key!r} is on device {dev} but {who} is on {device}; {fix}"
            )
        if old is None:
            continue
        if tuple(value.shape) != tuple(old.shape):
            raise ValueError(
                f"running statistic {key!r} has shape {tuple(value.shape)} but the layer's has "
                f"shape {tuple(old.shape)} (one value per feature); {fix}"
            )
        if value.dtype != old.dtype:
            xp = namespace(value)
            raise TypeError(
                f"running statistic {key!r} has dtype {dtype_name(xp, value.dtype)} but the "
                f"layer's is {dtype_name(xp, old.dtype)}; {fix}"
            )


# -- numbers --------------------------------------------------------------------------------


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a ``bool``; else ``TypeError`` (``"no"`` must not mean yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_count(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``.

    Python and NumPy integers are accepted (``numbers.Integral``); ``bool`` is not
    (``True`` is not a size), nor are floats such as ``2.5`` or ``5.0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def check_fraction(value: Any, name: str, *, closed: bool = False, why: str = "") -> float:
    """``value`` as a float if it is a number in ``[0, 1)`` (``[0, 1]`` with ``closed``);
    else ``ValueError`` naming it (``why`` says what it is)."""
    # cast: typeshed's numbers.Real has no __ge__, so ``0.0 <= Real`` does not type-check;
    # at run time every Real compares with a float.
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real)
        and 0.0 <= cast(float, value) <= 1.0
        and (closed or value < 1.0)
    ):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}{why}")
    return float(value)


def check_positive(value: Any, name: str, *, zero_ok: bool = False) -> float:
    """``value`` as a ``float`` if it is a finite number ``> 0`` (``>= 0`` with ``zero_ok``).

    Raises ``TypeError`` for a non-number (``bool`` included), ``ValueError`` for NaN, an
    infinity, a negative number or (without ``zero_ok``) zero.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        bound = "at least 0" if zero_ok else "positive"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return number


# -- labels -----------------------------------------------------------------------------------
# One set of rules for every place labels enter (SoftmaxWithLoss, cross_entropy_error,
# one_hot, validate_labels, accuracy, a compiled step): integer class indices of any integer
# dtype, or one-hot rows of any floating dtype.


def labels_are_one_hot(xp: Namespace, t: Array) -> bool:
    """``True`` for floating (one-hot) labels, ``False`` for integer class indices.

    Raises ``TypeError`` for any other dtype (e.g. boolean).
    """
    if isdtype(xp, t.dtype, "real floating"):
        return True
    if not isdtype(xp, t.dtype, "integral"):
        raise TypeError(
            f"labels must be integer class indices or one-hot floats, got dtype {t.dtype}"
        )
    return False


def check_scores_shape(shape: tuple[int, ...], what: str = "scores") -> None:
    """Raise ``ValueError`` unless ``shape`` is ``(N, C)`` or ``(C,)`` with ``C >= 1``."""
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{what} must have shape (N, C) for a batch or (C,) for one sample, got shape "
            f"{shape}"
            + (
                "; flatten the leading axes first, e.g. xp.reshape(y, (-1, C))"
                if len(shape) > 2
                else "; a single number has no classes to choose from"
            )
        )
    if shape[-1] == 0:
        raise ValueError(f"{what} of shape {shape} have no classes (C = 0)")


def check_label_shape(
    y_shape: tuple[int, ...], t_shape: tuple[int, ...], is_hot: bool, what: str = "scores"
) -> None:
    """Raise ``ValueError`` unless labels of ``t_shape`` fit scores of ``y_shape``.

    Scores are ``(N, C)`` with ``N >= 1`` (the mean over no samples is undefined), or
    ``(C,)`` for one sample, whose label is a class index of shape ``()`` or ``(1,)``, or a
    one-hot row ``(C,)`` (the book treats one sample as a batch of one).  Integer labels of
    a batch are ``(N,)``; one-hot labels have the scores' shape.
    """
    check_scores_shape(y_shape, what)
    if len(y_shape) == 1:
        (c,) = y_shape
        if is_hot and t_shape != (c,):
            raise ValueError(
                f"one-hot labels for one sample ({what} of shape ({c},)) must have shape "
                f"({c},), got {t_shape}"
            )
        if not is_hot and t_shape not in ((), (1,)):
            raise ValueError(
                f"the integer label of one sample ({what} of shape ({c},)) must be one class "
                f"index of shape () or (1,), got shape {t_shape}; for a batch pass {what} of "
                f"shape (N, {c})"
            )
        return
    n, c = y_shape
    if n == 0:
        raise ValueError(
            f"empty batch: {what} of shape {y_shape}; the mean over no samples is undefined, "
            "pass at least one sample"
        )
    if is_hot:
        if t_shape != (n, c):
            hint = (
                "; floating labels are read as one-hot rows: pass class indices as integers "
                "(e.g. backend.asarray(labels) of an integer NumPy array)"
                if len(t_shape) == 1
                else ""
            )
            raise ValueError(
                f"one-hot labels must have the {what}' shape {(n, c)}, got {t_shape}" + hint
            )
    elif t_shape != (n,):
        raise ValueError(
            f"integer labels must have shape ({n},) to match {n} rows of {what}, got "
            f"{t_shape}; pass class indices, or one-hot labels of shape {(n, c)}"
        )


def check_label_range(xp: Namespace, t: Array, c: int) -> None:
    """Raise ``ValueError`` unless every integer label is in ``[0, c)`` (one device read).

    ``t`` must be in a dtype that holds ``c - 1`` (``xprop._labels.label_dtype`` picks one).
    """
    if not t.shape[0]:
        return
    # t > c - 1 rather than t >= c: c itself may not fit t's dtype (uint8 labels, c = 256).
    if read_labels(xp, xp.any((t < 0) | (t > c - 1)), t):
        lo, hi = int(xp.min(t)), int(xp.max(t))
        raise ValueError(
            f"labels out of range: found values in [{lo}, {hi}] but there are {c} classes "
            f"(valid labels are 0..{c - 1})"
        )


def read_labels(xp: Namespace, value: Any, t: Array) -> int:
    """``int(value)``: the one device read of a label check, with a clear error if traced.

    Inside ``jax.jit`` (or a CUDA-graph capture) nothing can be read from the device; the
    library's own error (a ``ConcretizationTypeError`` on JAX) does not say what to do.
    """
    try:
        return int(value)
    except Exception as exc:
        if not library_for(xp).is_tracing(t):
            raise
        raise TypeError(
            "the label range check reads the labels from the device, which a traced or "
            "compiled program (jax.jit, a CUDA graph) cannot do; pass check_labels=False "
            "(and validate the labels once before training with "
            "xprop.validate_labels(t, num_classes)), or train with net.compile_step(lr)"
        ) from exc
