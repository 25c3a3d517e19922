"""The chapter-5 notebook, executed top to bottom in a Jupyter kernel, printing the book's numbers.

``notebooks/ch05_backprop.md`` is a MyST text notebook: jupytext reads it, nbclient runs it
in a fresh ``python3`` kernel with ``XPROP_BACKEND`` set (numpy and array_api_strict, or the
session's backend) and a short training run.  ``nox -s notebook`` installs what it needs;
elsewhere the test skips, naming what is missing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import xprop

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "ch05_backprop.md"
ITERS = 1200  # two epochs: the curve has two points, the accuracy is past 0.85
TIMEOUT_S = 600  # per cell; the float64 gradient check is the slowest


def _backends() -> list[str]:
    chosen = os.environ.get("XPROP_BACKEND", "").strip()
    return [chosen] if chosen else ["numpy", "array_api_strict"]


def _outputs(cell: dict) -> str:
    """The text a cell printed (its stdout stream outputs)."""
    return "".join(
        out.get("text", "")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


@pytest.fixture(scope="module")
def tools() -> None:
    """Skip, naming what is missing, unless the notebook can run here."""
    for module in ("jupytext", "nbclient", "ipykernel", "matplotlib_inline"):
        pytest.importorskip(
            module, reason=f"{module} is not installed (pip install '.[notebook]')"
        )
    if not os.environ.get("XPROP_DATA_DIR"):
        pytest.skip("set XPROP_DATA_DIR to a folder with the four MNIST .gz files to run this")


@pytest.mark.parametrize("backend_name", _backends())
def test_notebook_runs_top_to_bottom(tools, backend_name, monkeypatch, tmp_path):
    import jupytext
    from nbclient import NotebookClient

    try:
        xprop.get_backend(backend_name)
    except xprop.BackendError as exc:
        pytest.skip(f"backend {backend_name} unavailable: {exc}")
    # The kernel is a new process: it inherits this environment.  It must import the xprop
    # under test, and run on the chosen backend with the short setting.
    root = str(Path(xprop.__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
    )
    monkeypatch.setenv("XPROP_BACKEND", backend_name)
    monkeypatch.setenv("XPROP_NOTEBOOK_ITERS", str(ITERS))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key in ("XPROP_DTYPE", "XPROP_DEVICE"):
        monkeypatch.delenv(key, raising=False)

    nb = jupytext.read(NOTEBOOK)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    printed = [_outputs(c) for c in code]
    text = "".join(printed)

    # the backend cell: the chosen library, float32
    assert printed[0].startswith(f"{backend_name} (")
    assert "float32" in printed[0]
    # 5.4: the book's shopping numbers
    assert "220\n2.2 110 200\n" in text
    assert "715\n110 2.2 3.3 165 650\n" in text
    # every check_backward cell passed and said so
    checks = re.findall(rf"gradient check on {backend_name}: (.*)", text)
    assert len(checks) == 6, text
    # 5.7.3: the gradient-check table, backprop against central differences
    table = dict(re.findall(r"^(W1|b1|W2|b2):(\S+)$", text, re.MULTILINE))
    assert list(table) == ["W1", "b1", "W2", "b2"], text
    for key, value in table.items():
        assert float(value) < 1e-8, f"{key}: backprop and numerical gradients differ by {value}"
    # 5.7.4: training reached the last iteration and learned
    accs = re.findall(r"iteration\s+(\d+)\s+train acc, test acc \| (\S+), (\S+)", text)
    assert [int(i) for i, _, _ in accs] == [600, 1200]
    for _, train_acc, test_acc in accs:  # rounded to 4 decimals
        assert re.fullmatch(r"[01]\.\d{4}", train_acc), accs
        assert re.fullmatch(r"[01]\.\d{4}", test_acc), accs
    assert float(accs[-1][2]) > 0.85, accs
    assert f"test accuracy after {ITERS} iterations: {float(accs[-1][2]):.4f}" in text
    # the curve was drawn: one PNG from the plotting cell
    images = [
        out for c in code for out in c.get("outputs", []) if "image/png" in out.get("data", {})
    ]
    assert len(images) == 1
    # no error output and no warning on stderr anywhere
    stderr = [
        out.get("text", "")
        for c in code
        for out in c.get("outputs", [])
        if out.get("name") == "stderr"
    ]
    assert stderr == [], stderr
