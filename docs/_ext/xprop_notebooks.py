"""The notebook pages, and the plain ``.ipynb`` files the site offers for download.

``notebooks/ch05_backprop.md`` and ``notebooks/ch07_cnn.md`` are the source: MyST text
notebooks, which myst-nb executes and renders as the pages ``ch05_backprop`` and
``ch07_cnn`` (``docs/NAME.md`` links to ``notebooks/NAME.md``).  A reader without jupytext
needs an ``.ipynb``: after the build, :func:`write_notebooks` turns the notebook myst-nb
executed into :func:`plain_notebook` — outputs included, a first cell that installs xprop
where it is missing (Colab), images embedded, links to the documentation and the repository
made absolute — and writes it beside the pages, as ``notebooks/NAME.ipynb``;
:func:`page_notes` puts a download link under each notebook page's title (and says when this
build had no MNIST data to run it).  ``tests/test_notebook.py`` checks the same conversion on
the notebooks it executes, and the built site's files.

Only the standard library and nbformat here (no Sphinx import): the notebook tests use
:func:`plain_notebook` where Sphinx is not installed.
"""

from __future__ import annotations

import base64
import copy
import mimetypes
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]  # the repository
#: The notebook pages; ``docs/NAME.md`` links to the source ``notebooks/NAME.md``.
NOTEBOOK_DOCS = ("ch05_backprop", "ch07_cnn")
#: Where the plain notebooks go in the built site: ``notebooks/NAME.ipynb``.
SITE_FOLDER = "notebooks"

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")  # [label](target), ![alt](image)


def install_cell_source(repository: str) -> str:
    """The plain notebooks' first cell: install xprop, unless it imports already."""
    return (
        "# Colab, or a Jupyter without xprop: install it, with what this notebook uses\n"
        "# (matplotlib, pooch for MNIST).  xprop is not on PyPI yet: pip installs it from its\n"
        "# repository.  Nothing happens where xprop imports already.\n"
        "try:\n"
        "    import xprop\n"
        "except ImportError:\n"
        f'    %pip install "xprop[examples] @ git+{repository}"\n'
    )


def is_install_cell(cell: Any) -> bool:
    """Whether ``cell`` is the install cell of :func:`install_cell_source`."""
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else source
    return (
        cell.get("cell_type") == "code"
        and "    import xprop\nexcept ImportError:\n    %pip install " in source
    )


def _absolute(
    text: str, folder: Path, *, repository: str, branch: str, docs_url: str
) -> tuple[str, dict[str, dict[str, str]]]:
    """Markdown ``text`` whose relative links work outside the repository: images become
    attachments, a documentation page (``docs/NAME.md``) its page on ``docs_url``, any other
    file its page in the repository.  Returns the text and the attachments."""
    attachments: dict[str, dict[str, str]] = {}

    def replace(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if urlsplit(target).scheme or target.startswith("#"):
            return match.group(0)  # already absolute, or within the notebook
        where, _, anchor = target.partition("#")
        path = (folder / where).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            raise ValueError(f"the notebook links to {target!r}: no such file in the repository")
        if bang:
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            attachments[path.name] = {mime: data}
            return f"![{label}](attachment:{path.name})"
        docs = ROOT / "docs"
        if path.suffix == ".md" and path.is_relative_to(docs):
            url = docs_url + path.relative_to(docs).with_suffix(".html").as_posix()
        else:
            url = f"{repository}/blob/{branch}/{path.relative_to(ROOT).as_posix()}"
        return f"[{label}]({url}{'#' + anchor if anchor else ''})"

    return _LINK.sub(replace, text), attachments


def plain_notebook(
    nb: Any, source: Path, *, repository: str, branch: str = "main", docs_url: str
) -> Any:
    """A copy of the executed notebook ``nb`` that any Jupyter opens as it is.

    ``source`` is the MyST file it was read from (relative links start from its folder).
    The copy keeps every cell and output; its first cell installs xprop where it is missing
    (from ``repository``); its metadata is the kernel's and the language's only (no
    jupytext pairing, no myst-nb source map); its markdown images are attachments and its
    relative links absolute (``docs_url`` for the documentation's pages).  Raises
    ``nbformat.ValidationError`` if the result is not a valid notebook, ``ValueError`` for
    a link to a file that does not exist.
    """
    import nbformat

    out = copy.deepcopy(nb)
    out.metadata = nbformat.NotebookNode(
        {key: out.metadata[key] for key in ("kernelspec", "language_info") if key in out.metadata}
    )
    folder = Path(source).resolve().parent
    for cell in out.cells:
        if cell.cell_type == "markdown":
            cell.source, attachments = _absolute(
                cell.source, folder, repository=repository, branch=branch, docs_url=docs_url
            )
            if attachments:
                cell.attachments = nbformat.NotebookNode(attachments)
    if not (out.cells and is_install_cell(out.cells[0])):
        out.cells.insert(0, nbformat.v4.new_code_cell(install_cell_source(repository)))
    nbformat.validate(out)
    return out


# -- Sphinx -------------------------------------------------------------------------------


def _repository(app: Any) -> tuple[str, str]:
    options = app.config.html_theme_options
    return options["source_repository"].rstrip("/"), options["source_branch"]


def page_notes(app: Any, doctree: Any) -> None:
    """doctree-read: under a notebook page's title, the link to its ``.ipynb``, and a note
    when this build could not run it (no MNIST data)."""
    from docutils import nodes
    from xprop_gallery import mnist_available

    current = getattr(app.env, "current_document", None)  # Sphinx 8.2+; env.docname before
    docname = current.docname if current is not None else app.env.docname
    if docname not in NOTEBOOK_DOCS:
        return
    section = doctree.next_node(nodes.section)
    if section is None:
        return
    name = f"{docname}.ipynb"
    uri = "../" * docname.count("/") + f"{SITE_FOLDER}/{name}"
    executed = app.config.nb_execution_mode != "off"  # off without MNIST, or when asked
    outputs = "with this build's outputs" if executed else "without outputs"
    download = nodes.paragraph(
        "",
        "",
        nodes.strong(text="Download "),
        nodes.reference("", "", nodes.literal(text=name), refuri=uri),
        nodes.Text(
            f": this page as a plain Jupyter notebook, {outputs}, for any Jupyter or Colab "
            "(File → Upload notebook), no jupytext needed; its first cell installs xprop "
            "where it is missing."
        ),
    )
    added: list[Any] = [download]
    if not mnist_available():
        added.append(
            nodes.note(
                "",
                nodes.paragraph(
                    "",
                    "",
                    nodes.Text("This build had no MNIST data ("),
                    nodes.literal(text="XPROP_DATA_DIR"),
                    nodes.Text(" was not set), so the notebook is shown without its outputs."),
                ),
            )
        )
    section[1:1] = added  # after the title


def write_notebooks(app: Any, exception: Exception | None) -> None:
    """build-finished: ``notebooks/NAME.ipynb`` in the site, from what myst-nb executed."""
    import nbformat

    if exception is not None or app.builder.format != "html":
        return
    executed = Path(app.env.mystnb_config.output_folder)  # myst-nb's jupyter_execute/
    repository, branch = _repository(app)
    folder = Path(app.outdir) / SITE_FOLDER
    folder.mkdir(exist_ok=True)
    for docname in NOTEBOOK_DOCS:
        nb = nbformat.read(executed / f"{docname}.ipynb", as_version=4)
        plain = plain_notebook(
            nb,
            Path(app.env.doc2path(docname)),
            repository=repository,
            branch=branch,
            docs_url=app.config.xprop_docs_url,
        )
        nbformat.write(plain, folder / f"{docname}.ipynb")


def setup(app: Any) -> dict[str, Any]:
    # The documentation's address: the downloaded notebooks link to its pages.
    app.add_config_value("xprop_docs_url", "", "html", types=(str,))
    app.connect("doctree-read", page_notes)
    app.connect("build-finished", write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
