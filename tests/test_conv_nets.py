"""SimpleConvNet and DeepConvNet on the network model: gradients, compiled steps, errors.

Tiny shapes (the book's are for benchmarks and examples): the gradient check compares
backpropagation with central differences in float64 (Dropout masks held fixed), and the
compiled step must equal the book's loop with Adam.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import xprop
from xprop.optimizers import Adam


def _conv(n: int, pad: int = 1) -> dict[str, int]:
    return {"filter_num": n, "filter_size": 3, "pad": pad, "stride": 1}


NETS = {
    "simple": lambda be: xprop.SimpleConvNet(
        (2, 7, 6), _conv(3, pad=0), hidden_size=5, output_size=3, weight_init_std=0.3,
        backend=be, seed=0,
    ),
    "deep": lambda be: xprop.DeepConvNet(
        (1, 8, 8), _conv(2), _conv(2), _conv(2), _conv(2, pad=2), _conv(2), _conv(3),
        hidden_size=4, output_size=3, backend=be, seed=0,
    ),
}  # fmt: skip
SHAPES = {"simple": (2, 7, 6), "deep": (1, 8, 8)}


def _data(be: xprop.Backend, name: str, n: int = 3) -> tuple:
    rng = np.random.default_rng(1)
    x = be.asarray(rng.standard_normal((n, *SHAPES[name])))
    return x, be.asarray(rng.integers(0, 3, n))


@pytest.mark.parametrize("name", NETS)
def test_gradient_matches_numerical_gradient(backend: xprop.Backend, name: str) -> None:
    net = NETS[name](backend)
    x, t = _data(backend, name, n=2)
    with net.fixed_dropout_masks():
        grads = net.gradient(x, t)
        numerical = net.numerical_gradient(x, t)
    assert grads.keys() == numerical.keys() == net.params.keys()
    for key in grads:
        got, want = backend.to_numpy(grads[key]), backend.to_numpy(numerical[key])
        assert got.shape == tuple(net.params[key].shape)
        err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-3)
        assert err < 1e-6, f"{name} {key}: {err:.2e}"


@pytest.mark.parametrize("name", NETS)
def test_compiled_step_equals_the_book_loop(backend: xprop.Backend, name: str) -> None:
    be = backend
    x, t = _data(be, name, n=6)
    book, compiled = NETS[name](be), NETS[name](be)
    book_opt, opt = Adam(lr=0.01), Adam(lr=0.01)
    step = compiled.compile_step(opt)
    for _ in range(5):
        book_opt.update(book.params, book.gradient(x, t))
        loss = step(x, t)
    np.testing.assert_allclose(
        float(be.to_numpy(loss)), float(be.to_numpy(book.last_loss)), rtol=1e-10
    )
    for key in book.params:
        want, got = be.to_numpy(book.params[key]), be.to_numpy(compiled.params[key])
        scale = max(float(np.max(np.abs(want))), 1.0)
        assert float(np.max(np.abs(got - want))) / scale <= 1e-10, f"{step.kind} {key}"


def test_book_shapes_and_he_scales() -> None:
    net = xprop.DeepConvNet(seed=0)
    shapes = {k: tuple(v.shape) for k, v in net.params.items()}
    assert shapes["W1"] == (16, 1, 3, 3)
    assert shapes["W4"] == (32, 32, 3, 3)
    assert shapes["W6"] == (64, 64, 3, 3)
    assert shapes["W7"] == (64 * 4 * 4, 50)
    assert shapes["W8"] == (50, 10)
    order = [type(layer).__name__ for layer in net.layers.values()]
    block = ["Convolution", "Relu", "Convolution", "Relu", "Pooling"]
    assert order == block * 3 + ["Affine", "Relu", "Dropout", "Affine", "Dropout"]
    std = float(np.std(np.asarray(net.params["W7"])))
    assert abs(std - np.sqrt(2 / 1024)) < 0.05 * np.sqrt(2 / 1024)
    simple = xprop.SimpleConvNet(seed=0)
    assert tuple(simple.params["W1"].shape) == (30, 1, 5, 5)
    assert tuple(simple.params["W2"].shape) == (30 * 12 * 12, 100)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"conv_param": {"filter_num": 3, "filter_size": 3, "pad": 0}}, ValueError,
         r"conv_param lacks \['stride'\]; it takes"),
        (
            {"conv_param": {"filter_num": 3, "filter_siz": 3, "pad": 0, "stride": 1}},
            ValueError,
            r"unknown keys \['filter_siz'\] and lacks \['filter_size'\]",
        ),
        ({"conv_param": {"filter_num": 3, "filter_size": 3, "pad": -1, "stride": 1}}, ValueError,
         r"conv_param\['pad'\] must be an integer of at least 0"),
        ({"conv_param": {"filter_num": 3, "filter_size": 9, "pad": 0, "stride": 1}}, ValueError,
         "does not fit an input of side 7"),
        ({"input_dim": (1, 7)}, ValueError, r"input_dim must be \(channels, height, width\)"),
        ({"hidden_size": 0}, ValueError, "hidden_size must be an integer of at least 1"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_problem(kwargs: dict, error: type, match: str) -> None:
    args = {"input_dim": (1, 7, 7), **kwargs}
    with pytest.raises(error, match=match):
        xprop.SimpleConvNet(**args)


def test_checkpoint_of_one_network_does_not_load_into_another(tmp_path) -> None:
    simple = NETS["simple"]("numpy")
    path = tmp_path / "simple.safetensors"
    simple.save_params(path)
    with pytest.raises(xprop.CheckpointError, match="holds a SimpleConvNet, not a DeepConvNet"):
        NETS["deep"]("numpy").load_params(path)
    other = xprop.SimpleConvNet((2, 7, 6), _conv(4, pad=0), 5, 3, seed=0)
    with pytest.raises(xprop.CheckpointError, match="conv_param"):
        other.load_params(path)
    again = NETS["simple"]("numpy")
    again.load_params(path)
    for key in simple.params:
        np.testing.assert_array_equal(
            np.asarray(again.params[key]), np.asarray(simple.params[key])
        )


@pytest.mark.parametrize("name", NETS)
def test_accuracy_scores_in_the_books_chunks_of_100(backend: xprop.Backend, name: str) -> None:
    # 250 images: chunks of 100, 100 and 50 by default (the book's batch_size=100; a column
    # matrix of thousands of images would take gigabytes), the same answer in one chunk
    net = NETS[name](backend)
    assert inspect.signature(net.accuracy).parameters["batch_size"].default == 100
    x, t = _data(backend, name, n=250)
    scores = backend.to_numpy(net.predict(x, train_flg=False))
    want = float(np.mean(np.argmax(scores, axis=1) == backend.to_numpy(t)))
    assert 0.0 < want < 1.0  # a score that tells chunks apart from a wrong count
    assert net.accuracy(x, t) == pytest.approx(want, abs=1e-12)
    assert net.accuracy(x, t, batch_size=250) == pytest.approx(want, abs=1e-12)
    assert net.accuracy(x[:50, ...], t[:50, ...], batch_size=7) == pytest.approx(
        float(np.mean(np.argmax(scores[:50], axis=1) == backend.to_numpy(t)[:50])), abs=1e-12
    )
