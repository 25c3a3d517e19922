"""The JAX training step: :func:`~xprop.training.step.apply_step` compiled with ``jax.jit``."""

from __future__ import annotations

from typing import Any

from xprop.optimizers import Optimizer
from xprop.training.step import (
    apply_step,
    as_optimizer,
    check_labels,
    check_run_inputs,
    draw_keys,
    random_layers,
)

__all__ = ["JitStep"]


class JitStep:
    """One training step compiled with ``jax.jit``: arrays in, new arrays out.

    The compiled function takes the parameters, the optimizer's state, the BatchNorm
    statistics, the learning rate, the update count and the Dropout keys as inputs and
    returns their new values, so nothing is frozen into it but the shapes and the
    optimizer's other hyperparameters (a change of those compiles anew).  The parameter,
    state and statistics buffers are donated, so XLA updates them in place; the network's
    ``params`` dict and the optimizer's state are rebound to the new arrays after each call
    (an array taken from them before the call is no longer valid).  :meth:`run` compiles a
    whole sequence of steps into one ``lax.scan``: one dispatch for an epoch.  The network
    is traced through a :meth:`~xprop.nets.network.Network.replica`, so the network itself
    never holds a tracer.  Labels are checked before the compiled program runs, never
    inside (it cannot raise on data): at every call when the network checks labels (one
    device read; build it with ``check_labels=False`` after validating the data once), and
    once per label array in :meth:`run`.
    """

    kind = "jax.jit"

    def __init__(self, net: Any, optimizer: Optimizer | float) -> None:
        self.net, self.optimizer = net, as_optimizer(optimizer)
        self._random = random_layers(net)
        self._random_names = [_name_of(net, layer) for layer in self._random]
        self._hyper: dict[str, float] | None = None
        self._one: Any = None
        self._many: Any = None
        self._checked_labels: list[Any] = []  # label arrays validated already (kept alive)
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

        net, optimizer, names = self.net, self.optimizer, self._random_names

        def one(params, buffers, state, lr, it, keys, x, t):
            replica = net.replica()
            replica.params = params = dict(params)
            replica.set_running_stats(buffers)
            for j, name in enumerate(names):  # Dropout: device masks from the given keys
                twin = replica.layers[name]
                twin.keys, twin.device_masks = keys[j], True
            state = {slot: dict(arrays) for slot, arrays in state.items()}
            loss = apply_step(replica, optimizer, params, state, lr, it, x, t)
            return params, replica.running_stats(), state, it + 1, loss

        def many(params, buffers, state, lr, it, keys, x, t, index_batches):
            xp = net.backend.xp

            def body(carry, inputs):
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
        # parameters' dtype, inputs of the program; they are made anew only when the host's
        # values differ from what the device holds (a schedule, a loaded checkpoint).
        if optimizer.lr != self._lr_value:
            self._lr = be.xp.asarray(optimizer.lr, dtype=be.dtype, device=be.device)
            self._lr_value = optimizer.lr
        if optimizer.iter + 1 != self._it_value:
            self._it = be.xp.asarray(optimizer.iter + 1, dtype=be.dtype, device=be.device)
            self._it_value = optimizer.iter + 1
        keys = draw_keys(self._random, steps)
        if keys is not None:
            keys = be.asarray(keys, dtype="int32")
        return dict(net.params), net.running_stats(), state, self._lr, self._it, keys

    def _store(self, params: Any, buffers: Any, state: Any, it: Any, steps: int) -> None:
        self.net.params.update(params)
        self.net.set_running_stats(buffers)
        self.optimizer.set_state(state)
        self.optimizer.iter += steps
        self._it, self._it_value = it, self.optimizer.iter + 1  # the program counted on

    def __call__(self, x: Any, t: Any) -> Any:
        check_labels(self.net, t)
        one, _ = self._compiled()
        params, buffers, state, lr, it, keys = self._inputs(1)
        keys = None if keys is None else keys[0]
        params, buffers, state, it, loss = one(params, buffers, state, lr, it, keys, x, t)
        self._store(params, buffers, state, it, 1)
        return loss

    def run(self, x: Any, t: Any, index_batches: Any) -> Any:
        """Steps on ``take(x, index_batches[i])`` for each row ``i``, in one dispatch."""
        index_batches = check_run_inputs(self.net, x, t, index_batches, self._checked_labels)
        _, many = self._compiled()
        steps = int(index_batches.shape[0])
        params, buffers, state, lr, it, keys = self._inputs(steps)
        params, buffers, state, it, losses = many(
            params, buffers, state, lr, it, keys, x, t, index_batches
        )
        self._store(params, buffers, state, it, steps)
        return losses


def _name_of(net: Any, layer: Any) -> str:
    return next(name for name, candidate in net.layers.items() if candidate is layer)
