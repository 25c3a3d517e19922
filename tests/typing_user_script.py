"""A user's script on xprop's public API: what tests/test_typing.py runs and type-checks.

``mypy --strict`` must accept every line of it except the ones marked ``# E: <code>``,
where it must report exactly that error: proof that it sees xprop's own types, not
``Any``.  ``main()`` runs (a few steps on random data, on NumPy), so every line it
type-checks is also code that works; ``mistakes()`` and ``mnist()`` are type-checked only.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xprop
from xprop.checkpoint import load_params, read_metadata, save_params
from xprop.nn.layer import Layer
from xprop.training.trainer import Evaluation

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:

    def assert_type(value: object, _: object) -> object:
        return value


def report(ev: Evaluation) -> str | None:
    """A Trainer's report: one line per evaluation."""
    return f"epoch {ev.epoch}: train loss {ev.train_loss:.3f}, test acc {ev.test_acc:.3f}"


def main() -> float:
    backend = xprop.set_backend("numpy", dtype="float64")
    assert_type(backend, xprop.Backend)
    rng = backend.rng(seed=0)
    x: xprop.Array = rng.normal((40, 4))
    t: xprop.Array = rng.choice(3, 40)

    # The book's network, its loss, gradients and accuracy.
    net = xprop.TwoLayerNet(input_size=4, hidden_size=5, output_size=3, seed=0)
    assert_type(net.params, dict[str, xprop.Array])
    loss = net.loss(x, t)
    grads = net.gradient(x, t)
    assert_type(grads, dict[str, xprop.Array])
    assert_type(net.accuracy(x, t), float)

    # The book's loop with an optimizer, then a compiled step.
    optimizer = xprop.Adam(lr=0.01)
    optimizer.update(net.params, grads)
    assert_type(optimizer.lr, float)
    step = net.compile_step(optimizer)
    assert_type(step, xprop.TrainStep)
    assert_type(step.kind, str)
    loss = step(x, t)
    losses = step.run(x, t, rng.choice(40, (3, 8)), on_step=lambda made: None)
    assert losses.shape == (3,)

    # The Trainer.
    trainer = xprop.Trainer(
        net, x, t, x, t, epochs=2, mini_batch_size=8, optimizer="sgd", verbose=False,
        report=report, seed=1,
    )  # fmt: skip
    accuracy = trainer.train()
    assert_type(accuracy, float)
    assert_type(trainer.train_loss_list, list[float])

    # Checkpoints.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "net.safetensors"
        net.save_params(path, optimizer=optimizer)
        save_params(net, path)
        meta: dict[str, Any] = read_metadata(path)
        load_params(net, path)
        net.load_params(path)
    assert "config" in meta or meta

    # Layers, functions and the gradient check.
    affine = xprop.Affine(backend.zeros((4, 3)), backend.zeros(3))
    scores = affine.forward(x)
    dx = affine.backward(xprop.softmax(scores))
    assert dx is not None
    probabilities: xprop.Array = xprop.softmax(scores)
    assert_type(xprop.validate_labels(t, 3), bool)
    result = xprop.check_backward(xprop.Sigmoid(), x)
    assert_type(result, xprop.GradientCheckResult)
    layers: list[Layer] = [xprop.Affine(backend.zeros((4, 2)), backend.zeros(2)), xprop.Relu()]
    out = x
    for layer in layers:  # the book's loops, over layers of any kind
        out = layer.forward(out)
    dout = backend.xp.ones_like(out)
    for layer in reversed(layers):
        dout = layer.backward(dout)
    assert dout.shape == x.shape
    apple = xprop.MulLayer()
    price = apple.forward(100, 2)
    assert float(price) == 200.0
    del loss, probabilities
    return accuracy


def mistakes() -> None:
    """What mypy must refuse (never run)."""
    net = xprop.TwoLayerNet(input_size="784", hidden_size=50, output_size=10)  # E: arg-type
    x = xprop.get_backend().zeros((1, 784))
    label: str = net.accuracy(x, x)  # E: assignment
    xprop.Adam(lr="fast")  # E: arg-type
    xprop.Trainer(net, x, x, x, x, epochs=1.5)  # E: arg-type
    net.save_params(42)  # E: arg-type
    xprop.set_backend(device="cpu").no_such_method()  # E: attr-defined
    print(label)


def mnist() -> None:
    """The types of load_mnist (never run: it needs the data)."""
    (x_train, t_train), (x_test, t_test) = xprop.load_mnist(normalize=True)
    net = xprop.MultiLayerNetExtend(784, [100, 100], 10, use_batchnorm=True)
    xprop.Trainer(net, x_train, t_train, x_test, t_test, optimizer=xprop.SGD(lr=0.1))


if __name__ == "__main__":
    print(f"accuracy {main():.3f}")
    sys.exit(0)
