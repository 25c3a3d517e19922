"""The book's optimizers (ch. 6.1): SGD, Momentum, Nesterov, AdaGrad, RMSprop and Adam.

(And :class:`NesterovPaper`, Nesterov's update in the form of the paper the book cites.)

Each optimizer has the book's ``update(params, grads)``, which changes the ``params`` dict
with the formulas of the book's ``common/optimizer.py``, operation for operation (so a NumPy
transcription of the book gives the same numbers).  The code is array-API clean and works
in place: on NumPy, CuPy, PyTorch and array-api-strict ``params[key] -= step`` writes into
the existing parameter array (no new parameter array per step), and the optimizer's state
arrays are updated in place too; where arrays are immutable (JAX) the same statements rebind
the dict entries, and the networks, which hand their layers the dict's current arrays before
every forward pass (:class:`xprop.nets.network.Network`), train all the same.

State (velocities, squared-gradient sums, moments) is keyed by parameter name, created on
the first update with ``zeros_like`` of each parameter (same library, device and dtype),
and checked at every update: a change in the set of keys, a shape or a dtype raises a
``ValueError`` that names the key.  The state belongs to the ``params`` dict it was made
for (a network's ``net.params``): another dict, even of the same shapes, is refused, since
two networks sharing one set of moments and one step count would both train wrongly.
An update checks everything first (keys, shapes, dtypes, the gradients' library and
device, parameters that cannot be written in place) and then changes the parameters, the
state and the count, so a refused update changes nothing.  Hyperparameters are validated
and stored as Python floats, so a NumPy scalar never promotes float32 maths to float64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, MutableMapping
from typing import Any, ClassVar, TypeAlias

from xprop._namespace import MixedBackendError, namespace
from xprop.checks import device, library_name
from xprop.libraries import library_for
from xprop.typing import Array

__all__ = [
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "NesterovPaper",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
]

# The book's guard against division by zero in AdaGrad, RMSprop and Adam.
EPS = 1e-7
#: What an update works on, keyed like ``params`` (``"W1"``, ...): the parameters it
#: changes, their gradients, the state slots (``{"m": {...}, "v": {...}}``), and the
#: learning rate (a Python number, or a 0-d array in a compiled step).
Params: TypeAlias = MutableMapping[str, Array]
Grads: TypeAlias = Mapping[str, Array]
State: TypeAlias = Mapping[str, MutableMapping[str, Array]]
Scalar: TypeAlias = "float | Array"
#: The state slot of the float32 master copies of float16 parameters (mixed precision).
MASTER = "master"


class Optimizer:
    """Base class: hyperparameter validation, lazy state and the per-update checks.

    Subclasses list their hyperparameters in ``HYPER`` (name -> allowed range) and their
    state slots in ``SLOTS`` (e.g. ``("v",)``), and implement :meth:`step`.

    Mixed precision: for float16 parameters the optimizer keeps a float32 master copy
    (the state slot ``"master"``), its state in float32 and its arithmetic in float32
    (:meth:`apply`); the parameters the layers see are the masters rounded to float16
    after each update.  float16's smallest normal number is 6.1e-5: the book's ``1e-7``
    under a square root is 0 there, and a step of ``lr * m / 1e-7`` moved float16 weights
    by 12-30 in 20 Adam steps, where float32's moved by 0.02-0.1.  As in other frameworks,
    a float16 network trains as a float32 one does, within float16 rounding.
    """

    HYPER: ClassVar[dict[str, str]] = {}
    SLOTS: ClassVar[tuple[str, ...]] = ()
    # The hyperparameters are attributes, set (and checked) by __init__ and __setattr__;
    # each subclass declares its own for type checkers.
    lr: float

    def __init__(self, **hyper: float) -> None:
        self._state: dict[str, dict[str, Any]] | None = None
        self._shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
        # The params dict the state belongs to (held, not copied: on JAX its entries are
        # rebound every step, the dict stays); None until the first update after a load.
        self._owner: Mapping[str, Any] | None = None
        self.iter = 0  # number of updates done (the book's Adam.iter)
        self._plain: tuple[Any, ...] = ()  # dtypes a stateless optimizer updates without state
        for name, value in hyper.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        # Hyperparameters are validated whenever they are set, also later (lr schedules).
        if name in type(self).HYPER:
            value = _check_hyper(type(self).__name__, name, value, type(self).HYPER[name])
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in type(self).HYPER)
        return f"{type(self).__name__}({hyper})"

    # -- the book's API -------------------------------------------------------------------

    def update(self, params: MutableMapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Update every entry of ``params`` from ``grads`` (same keys, shapes and dtypes).

        In place where the library allows it; on JAX the dict entries are rebound.  Everything
        is checked before anything changes: a refused update leaves ``params``, the state
        and ``iter`` as they were.

        Raises
        ------
        ValueError
            ``grads`` lacks a key of ``params`` or has one more, a gradient's shape, dtype
            or device differs from its parameter's, a parameter cannot be updated in place
            (a read-only NumPy array, a PyTorch tensor that requires grad), ``params``
            changed keys, shapes or dtypes since the optimizer's state was created, or
            ``params`` is another dict than the one the state was made for (use one
            optimizer per network).
        MixedBackendError (a TypeError)
            A gradient comes from another array library than its parameter.
        """
        self._check(params, grads)
        self.apply(params, grads, self.state, self.lr, self.iter + 1)
        self.iter += 1

    def apply(
        self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array
    ) -> None:
        """:meth:`step` on ``params``, in mixed precision where they are float16.

        With a ``"master"`` slot in ``state`` (float32 copies of the float16 parameters),
        the formulas run on the masters with the gradients in float32, and each float16
        parameter is then set to its master, rounded (in place where the library allows
        it).  What :meth:`update` and the compiled steps run.
        """
        master = state.get(MASTER)
        if not master:
            self.step(params, grads, state, lr, t)
            return
        xp = namespace(*master.values())
        wide = {k: master.get(k, p) for k, p in params.items()}
        grads = {k: xp.astype(g, wide[k].dtype, copy=False) for k, g in grads.items()}
        self.step(wide, grads, state, lr, t)
        library = library_for(xp)
        for key, value in wide.items():  # rebound where arrays are immutable (JAX)
            if key not in master:
                params[key] = value
                continue
            master[key] = value
            params[key] = library.assign(params[key], xp.astype(value, params[key].dtype))

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        """The book's formulas: update ``params`` and ``state`` from ``grads``, nothing checked.

        ``lr`` is the learning rate and ``t`` the number of this update (from 1): Python
        numbers in :meth:`update`, 0-d arrays on the device in a compiled training step,
        where they are inputs of the compiled program rather than numbers frozen into it.
        ``state`` maps each slot (``"v"``, ``"m"``, ...) to a dict keyed like ``params``.
        The dicts are updated in place where the library allows it; where arrays are
        immutable (JAX) their entries are rebound, so a caller who passes copies of the
        dicts gets a pure function.
        """
        raise NotImplementedError

    def prepare(self, params: Mapping[str, Array]) -> dict[str, dict[str, Array]]:
        """The state for ``params``, created (zeros) before the first update if need be.

        What a compiled step passes to :meth:`step`, before it computes anything.  Raises
        ``ValueError`` as :meth:`update` does when ``params`` is not the model (the dict)
        the state was made for, or holds a parameter that cannot be updated in place.
        """
        _check_writable(type(self).__name__, params)
        if not self._stateful(params):
            return {}
        if self._state is None:
            self._init_state(params)
        else:
            self._check_state_fits(params)
        return self.state

    def set_state(self, state: Mapping[str, Mapping[str, Array]]) -> None:
        """Rebind the state slots to ``state`` (what a compiled step computed)."""
        if self._state is not None:
            for slot, arrays in state.items():
                self._state[slot].update(arrays)

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, dict[str, Array]]:
        """The live state slots (e.g. ``{"v": {"W1": array, ...}}``), updated in place by
        later updates; empty before the first update.  :meth:`state_dict` gives a copy."""
        return {} if self._state is None else self._state

    def hyperparameters(self) -> dict[str, float]:
        """The hyperparameters as plain floats, e.g. ``{"lr": 0.01, "momentum": 0.9}``."""
        return {name: getattr(self, name) for name in type(self).HYPER}

    def _check(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        if params.keys() != grads.keys():
            missing = sorted(set(params) - set(grads))
            extra = sorted(set(grads) - set(params))
            raise ValueError(
                f"{type(self).__name__}.update: grads must have the keys of params; "
                f"missing from grads: {missing}, not in params: {extra}"
            )
        _check_grads(type(self).__name__, params, grads)
        _check_writable(type(self).__name__, params)
        if not self._stateful(params):
            # Stateless (SGD): one optimizer may serve several networks, as in the book's
            # batch_norm_test.py.
            return
        if self._state is None:
            self._init_state(params)
        else:
            self._check_state_fits(params)

    def _check_state_fits(self, params: Mapping[str, Array]) -> None:
        if params.keys() != self._shapes.keys():
            raise ValueError(
                f"{type(self).__name__}.update: params now has keys {sorted(params)} but the "
                f"optimizer's state was made for {sorted(self._shapes)}; create a new "
                "optimizer for a different set of parameters"
            )
        for key, p in params.items():
            shape, dtype = self._shapes[key]
            if p.shape != shape or p.dtype != dtype:
                raise ValueError(
                    f"{type(self).__name__}.update: params[{key!r}] is now "
                    f"{tuple(p.shape)} {p.dtype}, but the optimizer's state was made for "
                    f"{shape} {dtype}; create a new optimizer for a different model"
                )
        if self._owner is None:  # loaded state: it belongs to the first params it updates
            self._owner = params
        elif params is not self._owner:
            name = type(self).__name__
            raise ValueError(
                f"{name}: this optimizer's state belongs to the parameters it first updated "
                f"(after {self.iter} updates), and these are another dict of parameters "
                f"(keys {sorted(params)}); two networks sharing one {name} would share its "
                f"moments and its step count: create one optimizer per network (e.g. "
                f"{name}(**opt.hyperparameters()) for each), and pass net.params itself, not "
                "a copy"
            )

    def _stateful(self, params: Mapping[str, Array]) -> bool:
        """Whether updating ``params`` needs state: slots, or float16 masters."""
        if type(self).SLOTS or self._state is not None:
            return True
        dtypes = tuple(p.dtype for p in params.values())
        if dtypes != self._plain:  # dtypes of params known to need no master copy
            if _halves(params):
                return True
            self._plain = dtypes
        return False

    def _init_state(self, params: Mapping[str, Array]) -> None:
        xp = namespace(*params.values())
        # float32 masters of float16 parameters; the slots like the masters, or else like
        # the parameters (zeros_like keeps each one's library, device and dtype).
        masters = {key: xp.astype(params[key], xp.float32) for key in _halves(params)}
        state = {
            slot: {key: xp.zeros_like(masters.get(key, p)) for key, p in params.items()}
            for slot in type(self).SLOTS
        }
        if masters:
            state[MASTER] = masters
        self._shapes = {key: (tuple(p.shape), p.dtype) for key, p in params.items()}
        self._state, self._owner = state, params

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: ``{"class", "hyper", "iter", "slots"}``, a snapshot.

        ``slots`` maps each slot name to ``{param key: array}``: copies (same library,
        device and dtype), which later updates leave alone, so a state dict taken now
        resumes from now; it is empty before the first update.
        """
        return {
            "class": type(self).__name__,
            "hyper": self.hyperparameters(),
            "iter": self.iter,
            "slots": {
                slot: {key: _copy(a) for key, a in arrays.items()}
                for slot, arrays in self.state.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (hyperparameters, count and slots).

        The slot arrays are copied (in their own library, on their device: convert them to
        the parameters' backend first), so ``state`` and this optimizer share nothing.  The
        state then belongs to the first ``params`` this optimizer updates.  Everything is
        checked (:meth:`check_state_dict`) before anything changes.
        """
        hyper, iteration, slots = self.check_state_dict(state)
        slots = {
            slot: {key: _copy(a) for key, a in arrays.items()} for slot, arrays in slots.items()
        }
        for k, v in hyper.items():
            setattr(self, k, v)
        self.iter = iteration
        self._owner = None
        if slots:
            first = next(iter(slots.values()))
            self._shapes = {key: (tuple(a.shape), a.dtype) for key, a in first.items()}
            self._state = slots
        else:
            self._shapes, self._state = {}, None

    def check_state_dict(
        self, state: Mapping[str, Any]
    ) -> tuple[dict[str, float], int, dict[str, dict[str, Array]]]:
        """Validate a :meth:`state_dict`-like mapping without changing anything.

        Returns the hyperparameters (as floats), the update count and the slots.

        Raises
        ------
        ValueError
            Another optimizer class, unknown or missing hyperparameters or slots, a bad
            value, or slot arrays whose keys, shapes or dtypes disagree.
        """
        name = type(self).__name__
        if state.get("class") != name:
            raise ValueError(
                f"optimizer state is for {state.get('class')!r}, not {name!r}; load it into "
                f"a {state.get('class')} optimizer"
            )
        hyper = dict(state.get("hyper", {}))
        if set(hyper) != set(type(self).HYPER):
            raise ValueError(
                f"{name} state has hyperparameters {sorted(hyper)}, expected "
                f"{sorted(type(self).HYPER)}"
            )
        checked = {k: _check_hyper(name, k, v, type(self).HYPER[k]) for k, v in hyper.items()}
        iteration = state.get("iter")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"{name} state: iter must be an integer >= 0, got {iteration!r}")
        slots = {slot: dict(arrays) for slot, arrays in state.get("slots", {}).items()}
        # Slots exist once the first update has made them (none for SGD), and the float32
        # masters of float16 parameters (mixed precision).
        expected = set(type(self).SLOTS) if iteration else set()
        if set(slots) - {MASTER} != expected:
            raise ValueError(
                f"{name} state after {iteration} updates must have slots {sorted(expected)}, "
                f"got {sorted(slots)}"
            )
        if slots:
            head = next(iter(slots))
            first = slots[head]
            for slot, arrays in slots.items():
                if slot != MASTER and arrays.keys() != first.keys():
                    raise ValueError(
                        f"{name} state: slot {slot!r} has keys {sorted(arrays)} but slot "
                        f"{head!r} has {sorted(first)}"
                    )
                for key, a in arrays.items():
                    if key in first and (
                        a.shape != first[key].shape or a.dtype != first[key].dtype
                    ):
                        raise ValueError(
                            f"{name} state: {slot}[{key!r}] is {tuple(a.shape)} {a.dtype} but "
                            f"{head}[{key!r}] is {tuple(first[key].shape)} {first[key].dtype}"
                        )
        return checked, iteration, slots


class SGD(Optimizer):
    """Stochastic gradient descent: ``W <- W - lr * dL/dW``."""

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive"}

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        for key in params:
            params[key] -= lr * grads[key]


class Momentum(Optimizer):
    """Momentum SGD: ``v <- momentum * v - lr * dL/dW``; ``W <- W + v`` (``v`` starts at 0)."""

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive", "momentum": "[0, 1)"}
    SLOTS = ("v",)
    momentum: float

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr=lr, momentum=momentum)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        v = state["v"]
        for key in params:
            # The book's v = momentum*v - lr*g, in place: the same two roundings.
            v[key] *= self.momentum
            v[key] -= lr * grads[key]
            params[key] += v[key]


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient as the book's ``common/optimizer.py`` writes it.

    The velocity first, then the parameters with the *new* velocity:
    ``v <- momentum * v - lr * g``; ``W <- W + momentum**2 * v - (1 + momentum) * lr * g``.
    The paper the book cites (arXiv:1212.0901, eq. 7) uses the velocity of the previous
    step instead: that form is :class:`NesterovPaper`.
    """

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive", "momentum": "[0, 1)"}
    SLOTS = ("v",)
    momentum: float

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr=lr, momentum=momentum)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        v, m = state["v"], self.momentum
        for key in params:
            g = grads[key]
            v[key] *= m
            v[key] -= lr * g
            params[key] += m * m * v[key]
            params[key] -= (1 + m) * lr * g


class NesterovPaper(Nesterov):
    """Nesterov's accelerated gradient in the paper's form (arXiv:1212.0901, eq. 7).

    The parameters move with the velocity of the previous step, then the velocity is
    updated: ``W <- W + momentum**2 * v - (1 + momentum) * lr * g``;
    ``v <- momentum * v - lr * g``.  Not the book's :class:`Nesterov`, whose parameter
    step uses the new velocity (docs/training-techniques.md shows the difference).
    """

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        v, m = state["v"], self.momentum
        for key in params:
            g = grads[key]
            params[key] += m * m * v[key]
            params[key] -= (1 + m) * lr * g
            v[key] *= m
            v[key] -= lr * g


class AdaGrad(Optimizer):
    """AdaGrad: ``h <- h + g * g``; ``W <- W - lr * g / (sqrt(h) + 1e-7)``."""

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive"}
    SLOTS = ("h",)

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        h = state["h"]
        for key in params:
            g = grads[key]
            h[key] += g * g
            params[key] -= lr * g / (namespace(h[key]).sqrt(h[key]) + EPS)


class RMSprop(Optimizer):
    """RMSprop: ``h <- decay_rate * h + (1 - decay_rate) * g * g``; AdaGrad's step with it."""

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive", "decay_rate": "[0, 1)"}
    SLOTS = ("h",)
    decay_rate: float

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr=lr, decay_rate=decay_rate)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        h, d = state["h"], self.decay_rate
        for key in params:
            g = grads[key]
            h[key] *= d
            h[key] += (1 - d) * g * g
            params[key] -= lr * g / (namespace(h[key]).sqrt(h[key]) + EPS)


class Adam(Optimizer):
    """Adam (arXiv:1412.6980v8) in the book's form, the bias correction folded into the rate.

    At update ``t`` (from 1): ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``;
    ``m <- m + (1 - beta1) * (g - m)``; ``v <- v + (1 - beta2) * (g**2 - v)``;
    ``W <- W - lr_t * m / (sqrt(v) + 1e-7)``.  ``iter`` counts the updates.
    """

    HYPER: ClassVar[dict[str, str]] = {"lr": "positive", "beta1": "[0, 1)", "beta2": "[0, 1)"}
    SLOTS = ("m", "v")
    beta1: float
    beta2: float

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2)

    def step(self, params: Params, grads: Grads, state: State, lr: Scalar, t: int | Array) -> None:
        m, v = state["m"], state["v"]
        b1, b2 = self.beta1, self.beta2
        # ** 0.5 is sqrt on a Python float (eager: a float never promotes float32 arrays)
        # and on a 0-d array (compiled: t is an input of the program).
        lr_t = lr * (1.0 - b2**t) ** 0.5 / (1.0 - b1**t)
        for key in params:
            g = grads[key]
            m[key] += (1 - b1) * (g - m[key])
            v[key] += (1 - b2) * (g**2 - v[key])
            params[key] -= lr_t * m[key] / (namespace(v[key]).sqrt(v[key]) + EPS)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "nesterovpaper": NesterovPaper,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def get_optimizer(
    optimizer: str | Optimizer, params: Mapping[str, float] | None = None
) -> Optimizer:
    """An optimizer from its name (``"SGD"``, ``"adam"``, any case) and hyperparameters.

    An :class:`Optimizer` object is returned as is (``params`` must then be ``None``).

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), or hyperparameters given with an
        optimizer object.
    TypeError
        A hyperparameter the optimizer does not have.
    """
    if not isinstance(optimizer, str):
        if params:
            raise ValueError(
                f"hyperparameters {dict(params)} were given together with an optimizer object "
                f"{optimizer!r}; set them on the object instead"
            )
        if not callable(getattr(optimizer, "update", None)):
            raise TypeError(
                f"optimizer must be a name or an object with update(params, grads), got "
                f"{type(optimizer).__name__}"
            )
        return optimizer
    try:
        cls = OPTIMIZERS[optimizer.lower()]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose one of: "
            f"{', '.join(c.__name__ for c in OPTIMIZERS.values())}"
        ) from None
    unknown = set(params or {}) - set(cls.HYPER)
    if unknown:
        raise TypeError(
            f"{cls.__name__} has no hyperparameter {', '.join(sorted(unknown))}; it takes "
            f"{', '.join(cls.HYPER)}"
        )
    return cls(**dict(params or {}))


def _copy(a: Any) -> Array:
    """A copy of array ``a`` in its own library, on its device."""
    return namespace(a).asarray(a, copy=True)


def _check_grads(owner: str, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
    for key, p in params.items():
        g = grads[key]
        # Another library would turn the parameter into its arrays (NumPy params with JAX
        # gradients become JAX arrays); another device fails at the key it meets.  Types
        # and devices are attributes: no device read.
        if type(g) is not type(p) and library_name(g) != library_name(p):
            raise MixedBackendError(
                f"{owner}.update: grads[{key!r}] is a {library_name(g)} array but "
                f"params[{key!r}] is a {library_name(p)} array; compute the gradients "
                "with the network's own backend (or convert them with backend.asarray)"
            )
        if device(g) != device(p):
            raise ValueError(
                f"{owner}.update: grads[{key!r}] is on {device(g)} but params[{key!r}] "
                f"is on {device(p)}; move the gradients to the parameters' device first"
            )
        # A wrong shape could broadcast silently; a wrong dtype would cast or promote.
        if g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError(
                f"{owner}.update: grads[{key!r}] is {tuple(g.shape)} {g.dtype} but "
                f"params[{key!r}] is {tuple(p.shape)} {p.dtype}; gradients must have their "
                "parameter's shape and dtype"
            )


def _halves(params: Mapping[str, Array]) -> list[str]:
    """The keys of the float16 parameters: those an optimizer keeps float32 masters of."""
    return [key for key, p in params.items() if "float16" in str(p.dtype)]


def state_dtype(dtype_name: str) -> str:
    """The dtype of an optimizer's state for parameters of ``dtype_name`` (float32 for
    float16: mixed precision)."""
    return "float32" if dtype_name == "float16" else dtype_name


def _check_writable(owner: str, params: Mapping[str, Array]) -> None:
    # Checked for every key before the first is written: an update that would fail at the
    # third key must not have changed the first two (nor the state, nor the count).
    library = None
    for key, p in params.items():
        library = library or library_for(namespace(p))  # one library: the grads' check
        reason = library.cannot_write(p)
        if reason is not None:
            raise ValueError(
                f"{owner}: params[{key!r}] cannot be updated in place: {reason}; nothing was "
                "changed"
            )


def _check_hyper(owner: str, name: str, value: Any, allowed: str) -> float:
    """The one check of every hyperparameter, the learning rate included (a number)."""
    what = " (the learning rate, e.g. lr=0.01)" if name == "lr" else ""
    # numbers.Real admits Python and NumPy scalars; they are stored as Python floats.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}: {name} must be a real number, got {type(value).__name__} {value!r}{what}"
        )
    number = float(value)
    ok = math.isfinite(number) and (number > 0 if allowed == "positive" else 0 <= number < 1)
    if not ok:
        need = "a finite number > 0" if allowed == "positive" else "in [0, 1)"
        raise ValueError(f"{owner}: {name} must be {need}, got {value!r}{what}")
    return number
