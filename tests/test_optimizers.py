"""Optimizers against a NumPy transcription of the book's ``common/optimizer.py``, on every
backend, over several steps; in-place updates; state on the parameters' device; errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from array_api_compat import device

import xprop
from xprop._namespace import MixedBackendError
from xprop.optimizers import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    NesterovPaper,
    RMSprop,
    get_optimizer,
)

SHAPES = {"W1": (4, 3), "b1": (3,), "W2": (3, 2), "b2": (2,)}
STEPS = 6


# -- the book's formulas, transcribed with NumPy (out of place, as the book writes them) ----


def book_sgd(lr=0.01):
    def update(params, grads, state):
        for key in params:
            params[key] = params[key] - lr * grads[key]

    return update


def book_momentum(lr=0.01, momentum=0.9):
    def update(params, grads, state):
        v = state.setdefault("v", {k: np.zeros_like(p) for k, p in params.items()})
        for key in params:
            v[key] = momentum * v[key] - lr * grads[key]
            params[key] = params[key] + v[key]

    return update


def book_nesterov(lr=0.01, momentum=0.9):
    # The book's order: the velocity first, then the parameters with the *new* velocity.
    def update(params, grads, state):
        v = state.setdefault("v", {k: np.zeros_like(p) for k, p in params.items()})
        for key in params:
            v[key] = v[key] * momentum
            v[key] = v[key] - lr * grads[key]
            params[key] = params[key] + momentum * momentum * v[key]
            params[key] = params[key] - (1 + momentum) * lr * grads[key]

    return update


def paper_nesterov(lr=0.01, momentum=0.9):
    # arXiv:1212.0901 eq. 7: the parameters move with the previous step's velocity.
    def update(params, grads, state):
        v = state.setdefault("v", {k: np.zeros_like(p) for k, p in params.items()})
        for key in params:
            params[key] = params[key] + momentum * momentum * v[key]
            params[key] = params[key] - (1 + momentum) * lr * grads[key]
            v[key] = v[key] * momentum
            v[key] = v[key] - lr * grads[key]

    return update


def book_adagrad(lr=0.01):
    def update(params, grads, state):
        h = state.setdefault("h", {k: np.zeros_like(p) for k, p in params.items()})
        for key in params:
            h[key] = h[key] + grads[key] * grads[key]
            params[key] = params[key] - lr * grads[key] / (np.sqrt(h[key]) + 1e-7)

    return update


def book_rmsprop(lr=0.01, decay_rate=0.99):
    def update(params, grads, state):
        h = state.setdefault("h", {k: np.zeros_like(p) for k, p in params.items()})
        for key in params:
            h[key] = h[key] * decay_rate
            h[key] = h[key] + (1 - decay_rate) * grads[key] * grads[key]
            params[key] = params[key] - lr * grads[key] / (np.sqrt(h[key]) + 1e-7)

    return update


def book_adam(lr=0.001, beta1=0.9, beta2=0.999):
    def update(params, grads, state):
        m = state.setdefault("m", {k: np.zeros_like(p) for k, p in params.items()})
        v = state.setdefault("v", {k: np.zeros_like(p) for k, p in params.items()})
        state["iter"] = state.get("iter", 0) + 1
        t = state["iter"]
        lr_t = lr * np.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        for key in params:
            m[key] = m[key] + (1 - beta1) * (grads[key] - m[key])
            v[key] = v[key] + (1 - beta2) * (grads[key] ** 2 - v[key])
            params[key] = params[key] - lr_t * m[key] / (np.sqrt(v[key]) + 1e-7)

    return update


CASES = [
    (SGD, book_sgd, {"lr": 0.1}),
    (Momentum, book_momentum, {"lr": 0.05, "momentum": 0.8}),
    (Nesterov, book_nesterov, {"lr": 0.05, "momentum": 0.7}),
    (NesterovPaper, paper_nesterov, {"lr": 0.05, "momentum": 0.7}),
    (AdaGrad, book_adagrad, {"lr": 0.3}),
    (RMSprop, book_rmsprop, {"lr": 0.02, "decay_rate": 0.9}),
    (Adam, book_adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.95}),
]
IDS = [c[0].__name__ for c in CASES]


def _host_problem(seed: int = 0) -> tuple[dict, list[dict]]:
    """Initial parameters and one gradient dict per step (drawn up front)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    return params, grads


@pytest.mark.parametrize(("cls", "book", "hyper"), CASES, ids=IDS)
def test_matches_the_book_over_several_steps(backend: xprop.Backend, cls, book, hyper) -> None:
    host_params, host_grads = _host_problem()
    # Copies: on NumPy asarray does not copy, and the update is in place.
    params = {k: backend.asarray(v.copy()) for k, v in host_params.items()}
    opt = cls(**hyper)
    ref, ref_state = {k: v.copy() for k, v in host_params.items()}, {}
    ref_update = book(**hyper)
    for step, g in enumerate(host_grads, start=1):
        opt.update(params, {k: backend.asarray(v) for k, v in g.items()})
        ref_update(ref, g, ref_state)
        for key in SHAPES:
            got = backend.to_numpy(params[key])
            # Same formulas, same operation order: equal to rounding (bit-equal on NumPy).
            np.testing.assert_allclose(
                got, ref[key], rtol=1e-13, atol=1e-15, err_msg=f"{key} at step {step}"
            )
            assert not np.allclose(got, host_params[key])  # it did move
    assert opt.iter == STEPS


@pytest.mark.parametrize(("cls", "book", "hyper"), CASES, ids=IDS)
def test_numpy_is_bit_identical_to_the_book(numpy_backend, cls, book, hyper) -> None:
    host_params, host_grads = _host_problem(3)
    params = {k: v.copy() for k, v in host_params.items()}
    opt, ref_update, ref_state = cls(**hyper), book(**hyper), {}
    for g in host_grads:
        opt.update(params, g)
        ref_update(host_params, g, ref_state)
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], host_params[key])


@pytest.mark.parametrize(("cls", "book", "hyper"), CASES, ids=IDS)
def test_updates_in_place_and_keeps_state_on_the_device(
    backend32: xprop.Backend, cls, book, hyper
) -> None:
    host_params, host_grads = _host_problem(1)
    params = {k: backend32.asarray(v) for k, v in host_params.items()}
    before = dict(params)
    opt = cls(**hyper)
    for g in host_grads[:2]:
        opt.update(params, {k: backend32.asarray(v) for k, v in g.items()})
    for key, p in params.items():
        assert p.dtype == backend32.dtype  # float32 stays float32 (no promotion)
        if backend32.name != "jax":  # JAX arrays are immutable: there the entry is rebound
            assert p is before[key], f"{key}: a new parameter array was made"
    for slot in cls.SLOTS:
        for key, s in opt.state[slot].items():
            assert s.dtype == params[key].dtype
            assert tuple(s.shape) == SHAPES[key]
            assert device(s) == device(params[key]), f"{slot}[{key!r}] is on another device"


def test_layers_see_the_update(backend32: xprop.Backend) -> None:
    """An optimizer trains a network whose layers read params live, on every backend."""
    rng = np.random.default_rng(0)
    x = backend32.asarray(rng.standard_normal((30, 5)))
    t = backend32.asarray(rng.integers(0, 3, 30))
    net = xprop.TwoLayerNet(5, 8, 3, weight_init_std=0.3, backend=backend32, seed=0)
    first = float(net.loss(x, t))
    opt = Adam(lr=0.05)
    for _ in range(60):
        opt.update(net.params, net.gradient(x, t))
    assert float(net.loss(x, t)) < 0.3 * first


def test_numpy_scalar_hyperparameters_never_promote_float32(backend32: xprop.Backend) -> None:
    params = {"W": backend32.asarray(np.ones((2, 2)))}
    grads = {"W": backend32.asarray(np.full((2, 2), 0.5))}
    opt = Adam(lr=np.float64(0.1), beta1=np.float64(0.9))
    assert type(opt.lr) is float
    opt.update(params, grads)
    assert params["W"].dtype == backend32.dtype


def test_state_dict_resumes_exactly(backend: xprop.Backend) -> None:
    host_params, host_grads = _host_problem(2)
    a = {k: backend.asarray(v) for k, v in host_params.items()}
    opt_a = Adam(lr=0.02)
    for g in host_grads[:3]:
        opt_a.update(a, {k: backend.asarray(v) for k, v in g.items()})
    b = {k: backend.asarray(backend.to_numpy(v)) for k, v in a.items()}
    state = opt_a.state_dict()
    copied = {s: {k: backend.asarray(backend.to_numpy(v)) for k, v in d.items()}
              for s, d in state["slots"].items()}  # fmt: skip
    opt_b = Adam()
    opt_b.load_state_dict({**state, "slots": copied})
    assert opt_b.lr == 0.02
    assert opt_b.iter == 3
    for g in host_grads[3:]:
        opt_a.update(a, {k: backend.asarray(v) for k, v in g.items()})
        opt_b.update(b, {k: backend.asarray(v) for k, v in g.items()})
    for key in a:
        np.testing.assert_array_equal(backend.to_numpy(a[key]), backend.to_numpy(b[key]))


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: SGD(lr=0), ValueError, r"SGD: lr must be a finite number > 0, got 0"),
        (lambda: SGD(lr=-0.1), ValueError, "lr must be a finite number > 0"),
        (lambda: SGD(lr=math.nan), ValueError, "lr must be a finite number > 0, got nan"),
        (lambda: Adam(lr=math.inf), ValueError, "lr must be a finite number > 0, got inf"),
        (lambda: SGD(lr="0.1"), TypeError, "lr must be a real number, got str '0.1'"),
        (lambda: SGD(lr=True), TypeError, "lr must be a real number, got bool"),
        (lambda: Momentum(momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
        (lambda: Nesterov(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: RMSprop(decay_rate=1), ValueError, r"decay_rate must be in \[0, 1\)"),
        (lambda: Adam(beta2=1.5), ValueError, r"Adam: beta2 must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_hyperparameters(make, error, message) -> None:
    with pytest.raises(error, match=message):
        make()


def test_hyperparameters_are_checked_when_changed_later() -> None:
    opt = Momentum()
    opt.lr = 0.5  # a schedule may change it
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1"):
        opt.lr = -1
    assert repr(opt) == "Momentum(lr=0.5, momentum=0.9)"


def test_mismatched_grads_and_changed_params(numpy_backend) -> None:
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    grads = {"W": np.ones((2, 3)), "b": np.ones(3)}
    opt = Momentum()
    with pytest.raises(ValueError, match=r"missing from grads: \['b'\], not in params: \[\]"):
        opt.update(params, {"W": grads["W"]})
    with pytest.raises(ValueError, match=r"not in params: \['c'\]"):
        opt.update(params, {**grads, "c": np.ones(1)})
    with pytest.raises(ValueError, match=r"grads\['b'\] is \(2, 3\) float64 but params\['b'\]"):
        opt.update(params, {**grads, "b": np.ones((2, 3))})  # would broadcast silently
    with pytest.raises(ValueError, match=r"grads\['b'\] is \(3,\) float32"):
        opt.update(params, {**grads, "b": np.ones(3, dtype=np.float32)})
    before = {k: v.copy() for k, v in params.items()}
    for k in params:  # nothing was changed by the failed calls
        np.testing.assert_array_equal(params[k], before[k])
    opt.update(params, grads)
    with pytest.raises(ValueError, match=r"params now has keys \['W', 'b', 'c'\]"):
        opt.update({**params, "c": np.ones(1)}, {**grads, "c": np.ones(1)})
    with pytest.raises(ValueError, match=r"params\['W'\] is now \(3, 3\) float64.*\(2, 3\)"):
        opt.update({**params, "W": np.ones((3, 3))}, {**grads, "W": np.ones((3, 3))})


def test_one_sgd_serves_two_networks(numpy_backend) -> None:
    """Stateless SGD is not tied to one set of parameters (the book's batch_norm_test.py)."""
    opt = SGD(lr=0.5)
    a = {"W": np.ones((2, 2))}
    b = {"W": np.ones(3), "gamma": np.ones(3)}
    opt.update(a, {"W": np.ones((2, 2))})
    opt.update(b, {"W": np.ones(3), "gamma": np.ones(3)})
    np.testing.assert_array_equal(a["W"], 0.5)
    np.testing.assert_array_equal(b["gamma"], 0.5)


def test_get_optimizer() -> None:
    assert isinstance(get_optimizer("adam", {"lr": 0.1}), Adam)
    assert get_optimizer("RMSprop").decay_rate == 0.99
    assert get_optimizer("NESTEROV", {"momentum": 0.5}).momentum == 0.5
    assert type(get_optimizer("Nesterov")) is Nesterov  # the book's
    assert type(get_optimizer("NesterovPaper", {"lr": 0.1})) is NesterovPaper
    opt = SGD()
    assert get_optimizer(opt) is opt
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; choose one of: SGD, "):
        get_optimizer("adamw")
    with pytest.raises(TypeError, match="SGD has no hyperparameter momentum; it takes lr"):
        get_optimizer("sgd", {"momentum": 0.9})
    with pytest.raises(ValueError, match="set them on the object instead"):
        get_optimizer(opt, {"lr": 0.1})
    with pytest.raises(TypeError, match="optimizer must be a name or an object with update"):
        get_optimizer(42)


def test_the_book_and_the_paper_nesterov_differ_and_do_not_mix(numpy_backend) -> None:
    """One step from v = 0: the book's W - (1 + m + m**2) lr g, the paper's W - (1 + m) lr g."""
    book, paper = Nesterov(lr=0.1, momentum=0.5), NesterovPaper(lr=0.1, momentum=0.5)
    a, b = {"W": np.ones(2)}, {"W": np.ones(2)}
    book.update(a, {"W": np.ones(2)})
    paper.update(b, {"W": np.ones(2)})
    np.testing.assert_allclose(a["W"], 1 - 1.75 * 0.1, rtol=1e-15)
    np.testing.assert_allclose(b["W"], 1 - 1.5 * 0.1, rtol=1e-15)
    np.testing.assert_array_equal(book.state["v"]["W"], paper.state["v"]["W"])  # -lr g both
    with pytest.raises(ValueError, match="state is for 'NesterovPaper', not 'Nesterov'"):
        Nesterov().load_state_dict(paper.state_dict())


def test_load_state_dict_errors(numpy_backend) -> None:
    opt = Adam()
    params = {"W": np.ones((2, 2))}
    opt.update(params, {"W": np.ones((2, 2))})
    state = opt.state_dict()
    fresh = Adam()
    with pytest.raises(ValueError, match="optimizer state is for 'Adam', not 'Momentum'"):
        Momentum().load_state_dict(state)
    with pytest.raises(ValueError, match=r"must have slots \['m', 'v'\], got \['m'\]"):
        fresh.load_state_dict({**state, "slots": {"m": state["slots"]["m"]}})
    with pytest.raises(ValueError, match=r"v\['W'\] is \(3,\) float64 but m\['W'\] is \(2, 2\)"):
        fresh.load_state_dict(
            {**state, "slots": {"m": state["slots"]["m"], "v": {"W": np.ones(3)}}}
        )
    with pytest.raises(ValueError, match="iter must be an integer >= 0, got -1"):
        fresh.load_state_dict({**state, "iter": -1})
    assert fresh.iter == 0
    assert fresh.state == {}


# -- state that is not shared, one set of parameters, all or nothing --------------------------


def _state(backend: xprop.Backend, opt) -> dict[str, dict[str, np.ndarray]]:
    return {s: {k: backend.to_numpy(v) for k, v in d.items()} for s, d in opt.state.items()}


def _on(backend: xprop.Backend, host: dict) -> dict:
    # Copies: on NumPy asarray does not copy, and the update is in place.
    return {k: backend.asarray(v.copy()) for k, v in host.items()}


def test_state_dict_is_a_snapshot_and_load_copies(backend: xprop.Backend) -> None:
    host_params, host_grads = _host_problem(4)
    a_params, b_params = _on(backend, host_params), _on(backend, host_params)
    a = Adam(lr=0.02)
    a.update(a_params, _on(backend, host_grads[0]))
    snapshot = a.state_dict()
    kept = {
        s: {k: backend.to_numpy(v) for k, v in d.items()} for s, d in snapshot["slots"].items()
    }
    b = Adam()
    b.load_state_dict(snapshot)
    a.update(a_params, _on(backend, host_grads[1]))  # moves a's moments ...
    assert not np.allclose(_state(backend, a)["m"]["W1"], kept["m"]["W1"])
    for slot, arrays in kept.items():  # ... but neither the snapshot nor b's
        for key, value in arrays.items():
            np.testing.assert_array_equal(backend.to_numpy(snapshot["slots"][slot][key]), value)
            np.testing.assert_array_equal(backend.to_numpy(b.state[slot][key]), value)
    a_state = _state(backend, a)
    b.update(b_params, _on(backend, host_grads[2]))  # and b's updates leave a alone
    assert not np.allclose(_state(backend, b)["m"]["W1"], kept["m"]["W1"])
    for slot, arrays in a_state.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(backend.to_numpy(a.state[slot][key]), value)


def test_one_optimizer_serves_one_set_of_parameters(backend: xprop.Backend) -> None:
    """Two networks of one shape, one Adam: the second is refused, not trained on one count."""
    host_params, host_grads = _host_problem(5)
    a_params, b_params = _on(backend, host_params), _on(backend, host_params)
    opt = Adam(lr=0.02)
    for g in host_grads[:3]:  # the binding survives JAX's rebinding of the entries
        opt.update(a_params, _on(backend, g))
    with pytest.raises(ValueError, match=r"Adam: this optimizer's state belongs to the par"):
        opt.update(b_params, _on(backend, host_grads[0]))
    assert opt.iter == 3
    for key, value in host_params.items():
        np.testing.assert_array_equal(backend.to_numpy(b_params[key]), value)
    # Its state loaded into another optimizer trains b exactly as a continues.
    other = Adam(lr=0.02)
    other.update(b_params, _on(backend, host_grads[0]))  # bound to b, then given a's state
    other.load_state_dict(opt.state_dict())
    b_params = {k: backend.asarray(backend.to_numpy(v)) for k, v in a_params.items()}
    opt.update(a_params, _on(backend, host_grads[3]))
    other.update(b_params, _on(backend, host_grads[3]))
    for key in host_params:
        np.testing.assert_array_equal(
            backend.to_numpy(a_params[key]), backend.to_numpy(b_params[key])
        )
    assert other.iter == opt.iter == 4


def test_one_optimizer_for_two_compiled_steps_is_refused(backend: xprop.Backend) -> None:
    rng = np.random.default_rng(0)
    x, t = backend.asarray(rng.standard_normal((8, 5))), backend.asarray(rng.integers(0, 3, 8))
    net_a = xprop.TwoLayerNet(5, 4, 3, backend=backend, seed=0)
    net_b = xprop.TwoLayerNet(5, 4, 3, backend=backend, seed=0)
    opt = Adam(lr=0.01)
    net_a.compile_step(opt)(x, t)
    before = {k: backend.to_numpy(v) for k, v in net_b.params.items()}
    with pytest.raises(ValueError, match="create one optimizer per network"):
        net_b.compile_step(opt)(x, t)
    assert opt.iter == 1
    for key, value in before.items():
        np.testing.assert_array_equal(backend.to_numpy(net_b.params[key]), value)


def _unwritable(backend: xprop.Backend, host: np.ndarray):
    """An array of ``backend`` holding ``host`` that cannot be updated in place."""
    if backend.name in ("numpy", "array_api_strict"):
        ro = host.copy()
        ro.flags.writeable = False
        return ro if backend.name == "numpy" else backend.xp.asarray(ro, device=backend.device)
    if backend.name == "torch":  # a leaf of autograd: in-place updates are refused
        return backend.asarray(host.copy()).requires_grad_(True)
    pytest.skip(f"{backend.name} arrays are never read-only (JAX rebinds; CuPy writes)")


@pytest.mark.parametrize(("cls", "book", "hyper"), CASES, ids=IDS)
def test_a_failed_update_changes_nothing(backend: xprop.Backend, cls, book, hyper) -> None:
    host_params, host_grads = _host_problem(6)
    params = _on(backend, host_params)
    opt = cls(**hyper)
    for g in host_grads[:2]:
        opt.update(params, _on(backend, g))
    # The last key: the ones before it would be updated first.
    params["b2"] = _unwritable(backend, backend.to_numpy(params["b2"]))
    kept_params = {k: backend.to_numpy(v) for k, v in params.items()}
    kept_state = _state(backend, opt)
    with pytest.raises(ValueError, match=r"params\['b2'\] cannot be updated in place: "):
        opt.update(params, _on(backend, host_grads[2]))
    assert opt.iter == 2
    for key, value in kept_params.items():
        np.testing.assert_array_equal(backend.to_numpy(params[key]), value)
    for slot, arrays in kept_state.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(backend.to_numpy(opt.state[slot][key]), value)


def test_a_compiled_step_with_an_unwritable_parameter_changes_nothing(
    backend: xprop.Backend,
) -> None:
    rng = np.random.default_rng(1)
    x, t = backend.asarray(rng.standard_normal((8, 5))), backend.asarray(rng.integers(0, 3, 8))
    net = xprop.TwoLayerNet(5, 4, 3, backend=backend, seed=0)
    net.params["b2"] = _unwritable(backend, backend.to_numpy(net.params["b2"]))
    kept = {k: backend.to_numpy(v) for k, v in net.params.items()}
    for opt in (SGD(lr=0.1), Adam(lr=0.1)):
        with pytest.raises(ValueError, match=r"params\['b2'\] cannot be updated in place"):
            net.compile_step(opt)(x, t)
        assert opt.iter == 0
        for key, value in kept.items():
            np.testing.assert_array_equal(backend.to_numpy(net.params[key]), value)


def test_grads_of_another_library_are_refused(backend: xprop.Backend) -> None:
    """NumPy parameters with JAX gradients would silently become JAX arrays."""
    host_params, host_grads = _host_problem(7)
    params = _on(backend, host_params)
    if backend.name == "numpy":
        import array_api_strict as other

        grads, other_name = (
            {k: other.asarray(v) for k, v in host_grads[0].items()},
            "array_api_strict",
        )
    else:
        grads, other_name = host_grads[0], "numpy"
    opt = Adam()
    with pytest.raises(
        MixedBackendError,
        match=rf"grads\['W1'\] is a {other_name} array but params\['W1'\] is a {backend.name} ",
    ):
        opt.update(params, grads)
    assert opt.iter == 0
    for key, value in host_params.items():
        assert type(params[key]) is type(backend.asarray(value))
        np.testing.assert_array_equal(backend.to_numpy(params[key]), value)


def test_numpy_params_with_jax_or_torch_grads_are_refused(numpy_backend) -> None:
    params = {"W": np.ones((2, 2), dtype=np.float32)}
    for module, name in (("jax.numpy", "jax"), ("torch", "torch")):
        lib = pytest.importorskip(module)
        grads = {"W": lib.ones((2, 2), dtype=lib.float32)}
        with pytest.raises(MixedBackendError, match=rf"is a {name} array but params"):
            Momentum().update(params, grads)
        assert type(params["W"]) is np.ndarray
        np.testing.assert_array_equal(params["W"], 1.0)


def test_grads_on_another_device_are_refused() -> None:
    """array-api-strict refuses to mix devices, but only at the key it meets them."""
    xp = pytest.importorskip("array_api_strict")
    cpu, dev1 = xp.Device("CPU_DEVICE"), xp.Device("device1")
    params = {k: xp.ones((2, 2), dtype=xp.float64, device=cpu) for k in ("A", "W")}
    grads = {"A": xp.ones((2, 2), dtype=xp.float64, device=cpu)}
    grads["W"] = xp.ones((2, 2), dtype=xp.float64, device=dev1)
    opt = Momentum()
    with pytest.raises(
        ValueError,
        match=r"grads\['W'\] is on .*'device1'\) but params\['W'\] is on .*'CPU_DEVICE'",
    ):
        opt.update(params, grads)
    assert opt.iter == 0
    backend = xprop.get_backend("array_api_strict")
    for key in params:  # A, before W, was not updated either
        np.testing.assert_array_equal(backend.to_numpy(params[key]), 1.0)


# -- mixed precision: float16 parameters, float32 masters, state and arithmetic ----------------


def _float16(backend: xprop.Backend) -> xprop.Backend:
    try:
        return xprop.get_backend(backend.name, device=backend.device, dtype="float16")
    except xprop.BackendError as exc:
        pytest.skip(f"{backend.describe()} has no float16: {exc}")


MIXED = {
    "SGD": lambda: SGD(lr=0.1),
    "Momentum": lambda: Momentum(lr=0.05),
    "AdaGrad": lambda: AdaGrad(lr=0.05),
    "RMSprop": lambda: RMSprop(lr=0.01),
    "Adam": lambda: Adam(lr=0.01),
}


def _train_20(be: xprop.Backend, make) -> tuple[dict, Any, Any]:
    """20 compiled steps of a small network on fixed data; its parameters' moves (host
    float64), the network and the optimizer."""
    rng = np.random.default_rng(0)
    x, t = be.asarray(rng.standard_normal((64, 20))), be.asarray(rng.integers(0, 4, 64))
    net = xprop.MultiLayerNet(20, [16], 4, backend=be, seed=0)
    start = {k: be.to_numpy(v).astype(np.float64) for k, v in net.params.items()}
    opt = make()
    step = net.compile_step(opt)
    for _ in range(20):
        step(x, t)
    moved = {k: be.to_numpy(v).astype(np.float64) - start[k] for k, v in net.params.items()}
    return moved, net, opt


@pytest.mark.parametrize("name", MIXED)
def test_float16_trains_as_float32_within_its_rounding(backend32, name) -> None:
    """``eps = 1e-7`` is 0 in float16: once ``v`` underflowed, Adam's step was ``lr*m/0``
    and float16 weights moved by 12-30 in 20 steps (float32: 0.02-0.1).  With float32
    masters, state and arithmetic the moves are float32's, within float16 rounding."""
    half = _float16(backend32)
    moved16, net16, opt16 = _train_20(half, MIXED[name])
    moved32, _, _ = _train_20(backend32, MIXED[name])
    for key in moved32:
        biggest = float(np.max(np.abs(moved32[key])))
        assert float(np.max(np.abs(moved16[key]))) <= 1.2 * biggest + 2e-3, key  # no blow-up
        # Most weights move as float32's do; a few with gradients below float16's reach
        # move less (AdaGrad and RMSprop normalise every gradient, however small).
        typical = float(np.median(np.abs(moved16[key] - moved32[key])))
        assert typical <= 0.02 * biggest + 1e-3, key
    assert all(v.dtype == half.dtype for v in net16.params.values())
    state = opt16.state
    assert set(state["master"]) == set(net16.params)
    for slot, arrays in state.items():
        for key, value in arrays.items():
            assert value.dtype == half.xp.float32, (slot, key)
        if slot == "master":  # the parameters are the masters, rounded
            for key, value in arrays.items():
                np.testing.assert_array_equal(
                    half.to_numpy(net16.params[key]), half.to_numpy(value).astype(np.float16)
                )


def test_a_float16_count_and_beta2_stay_exact_in_a_compiled_step(backend32) -> None:
    """A compiled step's learning rate and count are float32 for a float16 network: in
    float16 ``beta2 = 0.9999`` rounds to 1 (the parameters never moved) and the count
    sticks at 2048."""
    half = _float16(backend32)
    rng = np.random.default_rng(1)
    host_x, host_t = rng.standard_normal((32, 20)), rng.integers(0, 4, 32)
    moves = {}
    for be in (half, backend32):
        net = xprop.MultiLayerNet(20, [16], 4, backend=be, seed=0)
        opt = Adam(lr=0.001, beta2=0.9999)
        opt.iter = 3000  # resumed late: float16 holds no count above 2048 exactly
        start = be.to_numpy(net.params["W1"]).astype(np.float64)
        step = net.compile_step(opt)
        for _ in range(3):
            step(be.asarray(host_x), be.asarray(host_t))
        assert opt.iter == 3003
        moves[be.dtype_name] = be.to_numpy(net.params["W1"]).astype(np.float64) - start
    assert np.max(np.abs(moves["float16"])) > 1e-3  # it moved
    np.testing.assert_allclose(moves["float16"], moves["float32"], atol=2e-3)


def test_float16_state_with_its_masters_resumes_from_a_checkpoint(backend32, tmp_path) -> None:
    half = _float16(backend32)
    _, net, opt = _train_20(half, MIXED["Adam"])
    net.save_params(tmp_path / "half.safetensors", optimizer=opt)
    again, opt2 = xprop.MultiLayerNet(20, [16], 4, backend=half, seed=5), Adam(lr=0.01)
    again.load_params(tmp_path / "half.safetensors", optimizer=opt2)
    assert opt2.iter == 20
    for slot, arrays in opt.state.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(
                half.to_numpy(opt2.state[slot][key]), half.to_numpy(value), err_msg=slot
            )
