"""Checks at the door: a network checks its input once, against what it was built for, on
every backend; layers alone check their own; every refusal names the value and the fix and
changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import xprop
from xprop import Convolution, MultiLayerNetExtend, Pooling, SimpleConvNet, TwoLayerNet
from xprop.nets.network import Network
from xprop.nn.layers import Affine, Relu, SoftmaxWithLoss


def _images(be: xprop.Backend, shape: tuple[int, ...], seed: int = 0):
    return be.asarray(np.random.default_rng(seed).random(shape))


def _labels(be: xprop.Backend, n: int, classes: int = 3):
    return be.asarray(np.arange(n) % classes)


def _host(be: xprop.Backend, arrays: dict) -> dict[str, np.ndarray]:
    return {k: be.to_numpy(v).copy() for k, v in arrays.items()}


CONV = {"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1}


@pytest.mark.parametrize("wrong", [(1, 12, 10), (1, 11, 13), (1, 11, 12), (2, 10, 12)])
def test_a_conv_net_refuses_images_of_another_size(backend: xprop.Backend, wrong) -> None:
    """Built for (1, 10, 12): the layers alone would train on (1, 12, 10) or (1, 11, 13)."""
    net = SimpleConvNet((1, 10, 12), CONV, hidden_size=5, output_size=3, backend=backend, seed=0)
    before = _host(backend, net.params)
    x, t = _images(backend, (4, *wrong)), _labels(backend, 4)
    message = (
        rf"SimpleConvNet was built for images of shape input_dim=\(1, 10, 12\) but got x "
        rf"of shape \(4, {wrong[0]}, {wrong[1]}, {wrong[2]}\); pass images of shape "
        r"\(N, 1, 10, 12\)"
    )
    step = net.compile_step(xprop.Adam())
    for call in (
        lambda: net.predict(x),
        lambda: net.loss(x, t),
        lambda: net.gradient(x, t),
        lambda: net.accuracy(x, t),
        lambda: step(x, t),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    for key, value in _host(backend, net.params).items():
        np.testing.assert_array_equal(value, before[key])
    # The right size passes, flattened images do not.
    assert tuple(net.predict(_images(backend, (4, 1, 10, 12))).shape) == (4, 3)
    with pytest.raises(ValueError, match="input_dim"):
        net.predict(_images(backend, (4, 120)))


def test_deep_conv_net_refuses_17x17_when_built_for_16x16(backend: xprop.Backend) -> None:
    net = xprop.DeepConvNet((1, 16, 16), hidden_size=5, output_size=3, backend=backend)
    with pytest.raises(ValueError, match=r"input_dim=\(1, 16, 16\) but got x of shape"):
        net.predict(_images(backend, (2, 1, 17, 17)))
    assert tuple(net.predict(_images(backend, (2, 1, 16, 16))).shape) == (2, 3)


def test_a_fully_connected_net_names_its_input_size(backend: xprop.Backend) -> None:
    net = TwoLayerNet(6, 4, 3, backend=backend, seed=0)
    with pytest.raises(
        ValueError,
        match=r"TwoLayerNet input has 7 features per sample \(shape \(2, 7\)\) but the layer's "
        r"W has shape \(6, 4\) and expects 6",
    ):
        net.predict(_images(backend, (2, 7)))
    # (N, d1, d2) with d1 * d2 == input_size is a batch of flattened images, as in the book.
    assert tuple(net.predict(_images(backend, (2, 2, 3))).shape) == (2, 3)


def test_an_empty_batch_has_no_scores_and_no_loss(backend: xprop.Backend) -> None:
    """A convolutional network scores no images as no scores, like the others; its loss is
    the loss layer's "empty batch" (it was a raw reshape error, a ZeroDivisionError on JAX)."""
    net = SimpleConvNet((1, 8, 8), CONV, hidden_size=5, output_size=3, backend=backend, seed=0)
    x = _images(backend, (0, 1, 8, 8))
    t = backend.asarray(np.zeros(0, dtype=np.int64))
    assert tuple(net.predict(x).shape) == (0, 3)
    for call in (lambda: net.loss(x, t), lambda: net.gradient(x, t)):
        with pytest.raises(ValueError, match=r"empty batch: logits of shape \(0, 3\)"):
            call()
    bn = MultiLayerNetExtend(64, [5], 3, use_batchnorm=True, backend=backend, seed=0)
    assert tuple(bn.predict(_images(backend, (0, 1, 8, 8))).shape) == (0, 3)


@pytest.mark.parametrize("flag", ["False", 0, 1, None])
def test_train_flg_must_be_a_bool(backend: xprop.Backend, flag) -> None:
    """``predict(x, train_flg="False")`` used to run a training pass (statistics moved)."""
    net = MultiLayerNetExtend(
        6, [5], 3, use_batchnorm=True, use_dropout=True, backend=backend, seed=0
    )
    stats = _host(backend, net.running_stats())
    draws = net.rng.generator.bit_generator.state
    with pytest.raises(TypeError, match=r"train_flg must be True or False, got"):
        net.predict(_images(backend, (4, 6)), train_flg=flag)
    assert net.rng.generator.bit_generator.state == draws  # no mask drawn
    for key, value in _host(backend, net.running_stats()).items():
        np.testing.assert_array_equal(value, stats[key])


def test_a_parameter_that_no_longer_fits_its_layer_is_named(backend: xprop.Backend) -> None:
    net = TwoLayerNet(6, 4, 3, backend=backend, seed=0)
    x = _images(backend, (2, 6))
    net.params["W2"] = backend.zeros((5, 3))
    with pytest.raises(
        ValueError, match=r"params\['W2'\] is \(5, 3\) .* but TwoLayerNet was built with \(4, 3\)"
    ):
        net.predict(x)
    net.params["W2"] = backend.zeros((4, 3))  # the same shape: fine (a checkpoint load)
    assert tuple(net.predict(x).shape) == (2, 3)


def test_pooling_backward_names_a_dout_of_another_library(backend: xprop.Backend) -> None:
    other = "array_api_strict" if backend.name == "numpy" else "numpy"
    layer = Pooling(2, 2, stride=2)
    layer.forward(_images(backend, (1, 1, 4, 4)))
    dout = xprop.get_backend(other, dtype="float64").zeros((1, 1, 2, 2))
    with pytest.raises(TypeError, match="different array libraries were mixed"):
        layer.backward(dout)


@pytest.mark.parametrize(
    ("shape", "error", "message"),
    [
        ((1.9, 1, 4, 4), TypeError, r"col2im input_shape\[0\] must be an integer, got float 1\.9"),
        ((1, 1, 4), ValueError, r"input_shape must be the image batch's shape \(N, C, H, W\)"),
        ((1, 0, 4, 4), ValueError, r"input_shape\[1\] must be an integer of at least 1, got 0"),
    ],
)
def test_col2im_refuses_a_shape_that_is_not_four_integers(backend, shape, error, message):
    col = backend.zeros((9, 4))
    with pytest.raises(error, match=message):
        xprop.col2im(col, shape, 2, 2)


def test_a_convolution_too_large_for_memory_names_the_layer_and_the_fix(numpy_backend) -> None:
    from xprop.nn.conv import raise_if_out_of_memory

    x = _images(numpy_backend, (2, 3, 8, 8))
    with pytest.raises(MemoryError, match=r"Convolution: the column matrix .* takes 2\.0 GiB"):
        raise_if_out_of_memory(MemoryError("Unable to allocate"), (2**14, 2**14), x)
    # Other errors are the library's own.
    raise_if_out_of_memory(ValueError("shapes do not match"), (2**14, 2**14), x)
    with pytest.raises(MemoryError, match="pass fewer images at a time"):
        raise_if_out_of_memory(RuntimeError("CUDA out of memory. Tried"), (10, 10), x)


def test_a_layer_alone_still_checks_and_a_network_checks_once(backend: xprop.Backend) -> None:
    W = backend.asarray(np.ones((2, 3, 3, 3)))
    conv = Convolution(W)
    with pytest.raises(ValueError, match=r"has 1 channels .* expect 3"):
        conv.forward(_images(backend, (1, 1, 5, 5)))
    net = SimpleConvNet((1, 8, 8), CONV, hidden_size=5, output_size=3, backend=backend, seed=0)
    assert not any(layer.checks for layer in net.layers.values())


class _Custom(Network):
    """A network of a user's own: no output_size, no input_size, no link() call."""

    def __init__(self, backend: xprop.Backend, *, check_labels: bool = True) -> None:
        super().__init__(backend, seed=0)
        self.params = {"W1": self.rng.normal((4, 5), scale=0.5), "b1": backend.zeros(5)}
        self.params["W2"] = self.rng.normal((5, 3), scale=0.5)
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"])  # no bias
        self.last_layer = SoftmaxWithLoss(check_labels=check_labels)


def test_a_network_that_never_calls_link_is_linked_on_first_use(backend: xprop.Backend) -> None:
    net = _Custom(backend)
    assert net.param_layers == {}  # nothing yet: linked on first use
    x, t = _images(backend, (4, 4)), _labels(backend, 4)
    grads = net.gradient(x, t)
    assert net.param_layers == {
        "W1": ("Affine1", "W"),
        "b1": ("Affine1", "b"),
        "W2": ("Affine2", "W"),
    }
    assert set(grads) == {"W1", "b1", "W2"}
    assert net.layers["Affine1"].checks  # no input_size: its first layer checks
    with pytest.raises(ValueError, match="has 5 features per sample"):
        net.predict(_images(backend, (2, 5)))


def test_link_names_what_is_wrong(numpy_backend) -> None:
    class Forgot(Network):
        def __init__(self) -> None:  # no super().__init__()
            self.params = {}

    with pytest.raises(TypeError, match=r"must call super\(\).__init__\(backend, seed\) first"):
        Forgot().link({})
    with pytest.raises(TypeError, match=r"must call super\(\).__init__"):
        Forgot().save_params("unused.safetensors")
    net = _Custom(numpy_backend)
    with pytest.raises(TypeError, match=r"'Affine2' holds a parameter 'W' that is not params"):
        net.link({"Affine1": ("W1", "b1"), "Affine2": ("W1",)})
    with pytest.raises(TypeError, match=r"'Affine2' holds a parameter 'W' that is no entry"):
        net.link({"Affine1": ("W1", "b1")})
    net.params["W9"] = numpy_backend.zeros(3)
    with pytest.raises(TypeError, match=r"params \['W9'\] belong to no layer"):
        net.link(None)
    with pytest.raises(TypeError, match=r"names layers \['Affine9'\] that do not exist"):
        net.link({"Affine1": ("W1", "b1"), "Affine2": ("W2",), "Affine9": ()})


def test_a_checkpoint_of_other_sizes_says_what_to_build(numpy_backend, tmp_path) -> None:
    """The hint names sizes, not a ``sizes`` argument no network of one's own has."""
    TwoLayerNet(6, 5, 3, backend=numpy_backend, seed=0).save_params(tmp_path / "a.safetensors")
    with pytest.raises(
        xprop.CheckpointError,
        match=r"build the network so that its weights W1, W2, \.\.\. have the sizes \[6, 5, 3\]",
    ):
        TwoLayerNet(6, 4, 3, backend=numpy_backend).load_params(tmp_path / "a.safetensors")


def test_saving_under_a_regular_file_says_it_is_a_file(numpy_backend, tmp_path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    net = TwoLayerNet(6, 4, 3, backend=numpy_backend, seed=0)
    with pytest.raises(FileNotFoundError, match=r"folder .*afile is a file, not a folder"):
        net.save_params(tmp_path / "afile" / "c.safetensors")
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist; create it"):
        net.save_params(tmp_path / "nowhere" / "c.safetensors")
