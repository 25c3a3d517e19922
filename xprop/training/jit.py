"""The JAX training step: the book's loop body compiled with ``jax.jit``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xprop.optimizers import Optimizer
from xprop.training.compiled import (
    draw_keys,
    random_layers,
    replica,
    scalar_dtype,
    set_buffers,
    use_keys,
)
from xprop.training.step import LabelCheck, as_optimizer, check_rows, loop_body
from xprop.typing import Array

__all__ = ["JitStep"]


class JitStep:
    """One training step compiled with ``jax.jit``: arrays in, new arrays out.

    The compiled function takes the parameters, the optimizer's state, the BatchNorm
    statistics, the learning rate, the update count and the Dropout keys as inputs and
    returns their new values (the body: ``grads = net.gradient(x, t)``, then the
    optimizer's formulas, :meth:`~xprop.optimizers.Optimizer.step`), so nothing is frozen
    into it but the shapes and the
    optimizer's other hyperparameters (a change of those compiles anew).  The parameter,
    state and statistics buffers are donated, so XLA updates them in place; the network's
    ``params`` dict and the optimizer's state are rebound to the new arrays after each call
    (an array taken from them before the call is no longer valid).  :meth:`run` compiles a
    whole sequence of steps into one ``lax.scan``: one dispatch for an epoch.  The network
    is traced through a :func:`~xprop.training.compiled.replica`, so the network itself
    never holds a tracer.  Labels are checked before the compiled program runs, never
    inside (it cannot raise on data: :class:`~xprop.training.step.LabelCheck`), at every
    call when the network checks labels (one device read; build it with
    ``check_labels=False`` after validating the data once).
    """

    kind = "jax.jit"

    def __init__(self, net: Any, optimizer: Optimizer | float) -> None:
        self.net, self.optimizer = net, as_optimizer(optimizer)
        self.labels = LabelCheck(net)
        self._random = random_layers(net)  # Dropout layers: their keys are inputs
        self._hyper: dict[str, float] | None = None
        self._one: Any = None
        self._many: Any = None
        self._lr = self._it = None  # 0-d device arrays, with the host values they hold
        self._lr_value: float | None = None
        self._it_value: int | None = None

    def _compiled(self) -> tuple[Any, Any]:
        """The compiled functions, made anew when a hyperparameter other than lr changed."""
        hyper = self.optimizer.hyperparameters()
        hyper.pop("lr", None)
        if hyper != self._hyper:
            self._one, self._many = self._compile()
            self._hyper = hyper
        return self._one, self._many

    def _compile(self) -> tuple[Any, Any]:
        import jax

        net, optimizer, names = self.net, self.optimizer, self._random

        def one(
            params: dict[str, Array],
            buffers: dict[str, Array],
            state: dict[str, dict[str, Array]],
            lr: Array,
            it: Array,
            keys: Array | None,
            x: Array,
            t: Array,
        ) -> tuple[dict[str, Array], dict[str, Array], dict[str, dict[str, Array]], Array, Array]:
            twin = replica(net)
            twin.params = params = dict(params)
            set_buffers(twin, buffers)
            use_keys(twin, names, keys)  # Dropout: device masks from the given keys
            state = {slot: dict(arrays) for slot, arrays in state.items()}
            loss = loop_body(twin, optimizer, state, lr, it, x, t)
            return params, twin.running_stats(), state, it + 1, loss

        def many(
            params: dict[str, Array],
            buffers: dict[str, Array],
            state: dict[str, dict[str, Array]],
            lr: Array,
            it: Array,
            keys: Array | None,
            x: Array,
            t: Array,
            index_batches: Array,
        ) -> tuple[dict[str, Array], dict[str, Array], dict[str, dict[str, Array]], Array, Array]:
            xp = net.backend.xp

            def body(carry: Any, inputs: tuple[Array, Array]) -> tuple[Any, Array]:
                params, buffers, state, it = carry
                idx, step_keys = inputs
                xb, tb = xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)
                *carry, loss = one(params, buffers, state, lr, it, step_keys, xb, tb)
                return tuple(carry), loss

            carry = (params, buffers, state, it)
            (params, buffers, state, it), losses = jax.lax.scan(body, carry, (index_batches, keys))
            return params, buffers, state, it, losses

        donated = (0, 1, 2, 4)  # params, buffers, state, count: updated in place by XLA
        return jax.jit(one, donate_argnums=donated), jax.jit(many, donate_argnums=donated)

    def _inputs(self, steps: int) -> tuple[Any, ...]:
        net, optimizer = self.net, self.optimizer
        state = optimizer.prepare(net.params)
        be = net.backend
        # The learning rate and the update count live on the device as 0-d arrays in the
        # optimizer's arithmetic dtype (float32 for float16 parameters: 0.9999 is 1.0 in
        # float16, and a float16 count sticks at 2048), inputs of the program; they are made
        # anew only when the host's values differ from the device's (a schedule, a load).
        dtype = scalar_dtype(be)
        if optimizer.lr != self._lr_value:  # host numbers: copied, nothing compiled
            self._lr = be.asarray(optimizer.lr, dtype=dtype)
            self._lr_value = optimizer.lr
        if optimizer.iter + 1 != self._it_value:
            self._it = be.asarray(optimizer.iter + 1, dtype=dtype)
            self._it_value = optimizer.iter + 1
        keys = draw_keys(net, self._random, steps)
        if keys is not None:
            keys = be.asarray(keys, dtype="int32")
        return dict(net.params), net.running_stats(), state, self._lr, self._it, keys

    def _store(self, params: Any, buffers: Any, state: Any, it: Any, steps: int) -> None:
        self.net.params.update(params)
        self.net.set_running_stats(buffers)
        self.optimizer.set_state(state)
        self.optimizer.iter += steps
        self._it, self._it_value = it, self.optimizer.iter + 1  # the program counted on

    def __call__(self, x: Array, t: Array) -> Array:
        self.labels(x, t)
        one, _ = self._compiled()
        params, buffers, state, lr, it, keys = self._inputs(1)
        keys = None if keys is None else keys[0]
        params, buffers, state, it, loss = one(params, buffers, state, lr, it, keys, x, t)
        self._store(params, buffers, state, it, 1)
        return loss

    def run(
        self, x: Array, t: Array, index_rows: Array, on_step: Callable[[Array], None] | None = None
    ) -> Array:
        """Steps on ``take(x, index_rows[i])`` for each row ``i``, in one dispatch."""
        index_rows = check_rows(self.net.backend, x, t, index_rows)
        self.labels(x, t)
        _, many = self._compiled()
        steps = int(index_rows.shape[0])
        params, buffers, state, lr, it, keys = self._inputs(steps)
        params, buffers, state, it, made = many(
            params, buffers, state, lr, it, keys, x, t, index_rows
        )
        self._store(params, buffers, state, it, steps)
        if on_step is not None:
            on_step(made)
        return made
