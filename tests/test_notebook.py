"""The chapter-5 and chapter-7 notebooks, executed top to bottom in a Jupyter kernel, printing
the book's numbers.

``notebooks/ch05_backprop.md`` and ``notebooks/ch07_cnn.md`` are MyST text notebooks:
jupytext reads them, nbclient runs each in a fresh ``python3`` kernel with ``XPROP_BACKEND``
set (numpy and array_api_strict, or the session's backend) and a short training run.
``nox -s notebook`` installs what they need; elsewhere the tests skip, naming what is
missing.  Each executed notebook is then turned into the plain ``.ipynb`` the documentation
offers for download (``docs/_ext/xprop_notebooks.py``) and checked: valid nbformat, the
install cell first, the outputs kept, nothing that needs the repository beside it.  The
``built_site`` test checks the files a docs build wrote, in the site ``$XPROP_BUILT_SITE``
names (``nox -s docs`` sets it after building; the test skips without it).
"""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path

import backend_list
import pytest

import xprop

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REPOSITORY = "https://github.com/xprop/xprop"  # docs/conf.py: html_theme_options
DOCS_URL = "https://xprop.readthedocs.io/en/latest/"  # docs/conf.py: xprop_docs_url
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTEBOOK = NOTEBOOKS / "ch05_backprop.md"
ITERS = 1200  # two epochs: the curve has two points, the accuracy is past 0.85
CNN_NOTEBOOK = NOTEBOOKS / "ch07_cnn.md"
CNN_ITERS = 200  # a third of an epoch (a few seconds): past 0.85 already
TIMEOUT_S = 600  # per cell; the float64 gradient check is the slowest


def _backends() -> list[str]:
    chosen = os.environ.get("XPROP_BACKEND", "").strip()
    return [chosen] if chosen else list(backend_list.LIGHT)  # no large library to install


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


def _execute(notebook: Path, backend_name: str, iters: int, monkeypatch, tmp_path):
    """Run ``notebook`` in a fresh kernel on ``backend_name``: the executed notebook."""
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
    monkeypatch.setenv("XPROP_NOTEBOOK_ITERS", str(iters))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key in ("XPROP_DTYPE", "XPROP_DEVICE"):
        monkeypatch.delenv(key, raising=False)

    nb = jupytext.read(notebook)
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    return nb


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def xprop_notebooks():
    """docs/_ext/xprop_notebooks.py: the executed notebook as a plain .ipynb."""
    pytest.importorskip("nbformat", reason="nbformat is not installed (pip install '.[notebook]')")
    ext = str(ROOT / "docs" / "_ext")
    sys.path.insert(0, ext)
    try:
        import xprop_notebooks

        yield xprop_notebooks
    finally:
        sys.path.remove(ext)


def _relative_links(nb) -> list[str]:
    """The link targets of the markdown cells that only work inside the repository."""
    targets = [
        target
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for target in re.findall(r"\]\(([^)\s]+)\)", cell.source)
    ]
    return [t for t in targets if not re.match(r"(https?:|attachment:|#)", t)]


def _check_plain_notebook(ext, plain, executed) -> None:
    """``plain`` is the downloadable form of the executed notebook ``executed``."""
    import nbformat

    nbformat.validate(plain)  # raises ValidationError, naming the problem
    # the first cell installs xprop where it is missing, and is valid IPython
    first = plain.cells[0]
    assert ext.is_install_cell(first), first.source
    assert f'%pip install "xprop[examples] @ git+{REPOSITORY}"' in first.source
    from IPython.core.inputtransformer2 import TransformerManager

    compile(TransformerManager().transform_cell(first.source), "<install cell>", "exec")
    # then every cell of the executed notebook, in order, with its outputs
    assert [c.cell_type for c in plain.cells[1:]] == [c.cell_type for c in executed.cells]
    for mine, theirs in zip(_code(plain)[1:], _code(executed), strict=True):
        assert mine.source == theirs.source
        assert mine.outputs == theirs.outputs
    assert all(c.outputs for c in _code(plain)[1:])  # every cell after it printed or drew
    assert any("image/png" in o.get("data", {}) for c in _code(plain) for o in c.outputs)
    # no jupytext pairing or myst-nb metadata: any Jupyter opens it as it is
    assert set(plain.metadata) <= {"kernelspec", "language_info"}
    assert plain.metadata.kernelspec.name == "python3"
    # nothing that needs the repository beside it: images embedded, links absolute
    assert _relative_links(plain) == []
    for cell in plain.cells:
        for name, data in cell.get("attachments", {}).items():
            assert base64.b64decode(data["image/png"]).startswith(PNG_MAGIC), name


def _plain(ext, notebook: Path, nb, tmp_path: Path):
    """The plain form of ``nb``, written to a file and read back as any Jupyter would."""
    import nbformat

    path = tmp_path / f"{notebook.stem}.ipynb"
    nbformat.write(
        ext.plain_notebook(nb, notebook, repository=REPOSITORY, docs_url=DOCS_URL), path
    )
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _images_and_stderr(code: list, backend_name: str) -> tuple[int, list[str]]:
    """How many PNG images the cells drew, and whatever they wrote to stderr.

    On JAX the float64 gradient check switches on JAX's 64-bit mode, with xprop's one-time
    ``X64Warning`` (documented, tested in tests/test_backend.py): the one warning allowed.
    """
    outputs = [out for c in code for out in c.get("outputs", [])]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    stderr = [out.get("text", "") for out in outputs if out.get("name") == "stderr"]
    if backend_name == "jax":
        stderr = [text for text in stderr if "X64Warning: xprop switched on JAX" not in text]
    return len(images), stderr


@pytest.mark.parametrize("backend_name", _backends())
def test_notebook_runs_top_to_bottom(tools, xprop_notebooks, backend_name, monkeypatch, tmp_path):
    nb = _execute(NOTEBOOK, backend_name, ITERS, monkeypatch, tmp_path)
    code = _code(nb)
    printed = [_outputs(c) for c in code]
    text = "".join(printed)

    # the backend cell: the chosen library, float32
    assert printed[0].startswith(f"{backend_name} (")
    assert "float32" in printed[0]
    # 5.4: the book's shopping numbers
    assert "220\n2.2 110 200\n" in text
    assert "715\n110 2.2 3.3 165 650\n" in text
    # every check_backward cell passed and said so
    checks = re.findall(rf"gradient check on {backend_name}(?:\.numpy)?: (.*)", text)  # jax.numpy
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
    # the curve was drawn: one PNG from the plotting cell; no warning on stderr anywhere
    images, stderr = _images_and_stderr(code, backend_name)
    assert images == 1
    assert stderr == [], stderr
    # the plain .ipynb of the download link: the two graphs of 5.4 embedded, the
    # documentation's link absolute
    plain = _plain(xprop_notebooks, NOTEBOOK, nb, tmp_path)
    _check_plain_notebook(xprop_notebooks, plain, nb)
    assert sorted(n for c in plain.cells for n in c.get("attachments", {})) == [
        "graph_apple.png",
        "graph_apple_orange.png",
    ]
    assert f"[The documentation]({DOCS_URL}index.html)" in plain.cells[-1].source


@pytest.mark.parametrize("backend_name", _backends())
def test_cnn_notebook_runs_top_to_bottom(
    tools, xprop_notebooks, backend_name, monkeypatch, tmp_path
):
    nb = _execute(CNN_NOTEBOOK, backend_name, CNN_ITERS, monkeypatch, tmp_path)
    code = _code(nb)
    printed = [_outputs(c) for c in code]
    text = "".join(printed)

    assert printed[0].startswith(f"{backend_name} (")
    assert "float32" in printed[0]
    # 7.4.3: the book's im2col shapes, and the output sizes
    assert printed[1] == "(9, 75)\n(90, 75)\n"
    assert printed[2].splitlines() == [
        "stride 1, pad 0: OH = OW = 3, col (90, 75)",
        "stride 1, pad 2: OH = OW = 7, col (490, 75)",
        "stride 2, pad 0: OH = OW = 2, col (40, 75)",
        "stride 2, pad 1: OH = OW = 3, col (90, 75)",
    ]
    # col2im is im2col's adjoint, to float32 rounding
    assert float(re.search(r"relative difference: (\S+)", text).group(1)) < 1e-5
    # 7.2: the layer equals the loops and the explicit matrix product
    assert "output shape: (1, 3, 4, 4)" in text
    assert float(re.search(r"layer vs loops: (\S+)", text).group(1)) < 1e-5
    shape, mm_diff = printed[5].rsplit(" ", 1)
    assert shape == "(16, 18)"
    assert float(mm_diff) < 1e-5
    # every check_backward passed: two convolutions (x, W, b) and one pooling (x)
    checks = re.findall(rf"gradient check on {backend_name}(?:\.numpy)?: (.*)", text)  # jax.numpy
    assert len(checks) == 3, text
    assert [c.count("max abs") for c in checks] == [3, 3, 1]
    # 7.3: the maxima, and the gradient at the first maximum of each window
    assert printed[7] == (
        "[[3. 0.]\n [5. 4.]]\n[[0. 1. 1. 0.]\n [0. 0. 0. 0.]\n [1. 0. 0. 1.]\n [0. 0. 0. 0.]]\n"
    )
    assert "(1, 1, 2, 2) [[3.0, 3.0], [5.0, 5.0]]" in text  # -inf padding, counted in OH
    # 7.5: the book's shapes, then training that learned
    assert "training: (60000, 1, 28, 28) (60000,)" in text
    assert "'W1': (30, 1, 5, 5)" in text
    assert "'W2': (4320, 100)" in text
    accs = re.findall(r"iteration\s+(\d+)\s+train acc, test acc \| (0\.\d{4}), (0\.\d{4})", text)
    assert [int(i) for i, _, _ in accs] == [CNN_ITERS]
    final = re.search(rf"test accuracy after {CNN_ITERS} iterations: (0\.\d{{4}})$", text, re.M)
    assert final is not None, text
    assert float(final.group(1)) > 0.85
    # the filters were drawn; no warning on stderr anywhere
    images, stderr = _images_and_stderr(code, backend_name)
    assert images == 1
    assert stderr == [], stderr
    # the plain .ipynb: the link to the documentation's page on convolution made absolute
    plain = _plain(xprop_notebooks, CNN_NOTEBOOK, nb, tmp_path)
    _check_plain_notebook(xprop_notebooks, plain, nb)
    assert f"[Convolution and pooling]({DOCS_URL}convolution.html)" in plain.cells[1].source


@pytest.mark.parametrize("name", ["ch05_backprop", "ch07_cnn"])
def test_built_site_notebooks(xprop_notebooks, name):
    """The .ipynb a docs build wrote beside the page that links to it."""
    import nbformat

    folder = os.environ.get("XPROP_BUILT_SITE")
    if not folder:
        pytest.skip("XPROP_BUILT_SITE names no built site (nox -s docs sets it after building)")
    site = ROOT / folder
    path = site / "notebooks" / f"{name}.ipynb"
    html = (site / f"{name}.html").read_text(encoding="utf-8")
    assert f'href="notebooks/{name}.ipynb"' in html  # the download link
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert xprop_notebooks.is_install_cell(nb.cells[0])
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    assert _relative_links(nb) == []
    # with this build's outputs when it had MNIST to run the notebook, as the page says
    outputs = [o for c in _code(nb) for o in c.outputs]
    if "with this build's outputs" in html:
        assert all(c.outputs for c in _code(nb)[1:]), "cells without their outputs"
        assert any("image/png" in o.get("data", {}) for o in outputs)
    else:
        assert "without outputs" in html
        assert outputs == []
