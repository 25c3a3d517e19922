"""The example gallery: sphinx-gallery runs ``examples/*.py`` at build time, as scripts.

What sphinx-gallery needs from xprop's examples, in one place (``conf.py`` names these by
their qualified names, so the configuration stays picklable):

* :func:`reset_argv` gives each script its command line: its settings in the one table of
  ``examples/_settings.py`` (:data:`SETTINGS`: the book's up to chapter 6, short runs for
  the convolutional networks) and ``--plot`` into a scratch folder;
* :func:`plot_files` is the image scraper: it moves the figure a script wrote with ``--plot``
  into the gallery (the scripts write files and close their figures, as on the command line);
* :func:`run_as_script` lets a script end with ``sys.exit(main())``: status 0 simply returns
  (every example calls it last), any other status fails the example (sphinx-gallery runs
  scripts in the Sphinx process, where ``SystemExit`` would end the whole build);
* :class:`ChapterOrder` sorts the gallery in the book's order;
* the ``gallery-settings`` directive prints :data:`SETTINGS` as a table in the gallery's
  header, with the guide's pages on each example, and says when MNIST was not there.

Examples that need MNIST run only when ``XPROP_DATA_DIR`` is set; without it the gallery
shows their code and description, unexecuted (:func:`executed_pattern`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

# The examples' settings: one table, in examples/_settings.py, that the tests read too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from _settings import SETTINGS

_PLOTS = tempfile.TemporaryDirectory(prefix="xprop-gallery-")  # removed when Sphinx exits


def mnist_available() -> bool:
    """Whether this build can run the MNIST examples (``XPROP_DATA_DIR`` is set)."""
    return bool(os.environ.get("XPROP_DATA_DIR"))


def executed_pattern() -> str:
    """sphinx-gallery's ``filename_pattern``: the examples this build runs."""
    names = [n for n, s in SETTINGS.items() if mnist_available() or not s.mnist]
    return r"[\\/](" + "|".join(n.replace(".", r"\.") for n in names) + r")$"


def _plot_path(src_file: str) -> Path:
    return Path(_PLOTS.name) / (Path(src_file).stem + ".png")


def reset_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """The command-line arguments of one example in this build."""
    name = Path(script_vars["src_file"]).name
    setting = SETTINGS.get(name)
    if setting is None:
        raise KeyError(f"examples/{name} has no entry in SETTINGS of examples/_settings.py")
    args = list(setting.docs_args)
    if setting.plot:
        args += ["--plot", str(_plot_path(script_vars["src_file"]))]
    return args


def plot_files(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """Image scraper: the PNG the example wrote with ``--plot``, moved into the gallery."""
    from sphinx_gallery.scrapers import figure_rst

    written = _plot_path(block_vars["src_file"])
    if not written.exists():
        return ""
    target = next(block_vars["image_path_iterator"])
    shutil.move(written, target)
    return figure_rst([target], gallery_conf["src_dir"])


class ExampleExit(RuntimeError):
    """An example ended with a non-zero exit status."""


_real_exit = sys.exit


def _exit(status: object = None) -> None:
    if status not in (None, 0):
        raise ExampleExit(f"the example exited with status {status!r}")


def run_as_script(gallery_conf: dict[str, Any], fname: str | None, when: str) -> None:
    """sphinx-gallery's reset hook: ``sys.exit`` as a script sees it, for one example."""
    sys.exit = _exit if when == "before" and fname is not None else _real_exit


class ChapterOrder:
    """Sort key of sphinx-gallery's ``within_subsection_order``: the order of SETTINGS."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        names = list(SETTINGS)
        return (names.index(filename) if filename in names else len(names), filename)


class GallerySettings(SphinxDirective):
    """``.. gallery-settings::`` — how this build ran each example, as a table."""

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 25 45 30",
            "",
            "   * - example",
            "     - run here as",
            "     - in the guide",
        ]
        for name, setting in SETTINGS.items():
            plot = ["--plot", f"{Path(name).stem}.png"] if setting.plot else []
            command = " ".join(["python", f"examples/{name}", *setting.docs_args, *plot])
            ran = f"``{command}``"
            if setting.mnist and not mnist_available():
                ran += " — *not run in this build*"
            lines += [
                f"   * - :doc:`{Path(name).stem}`",
                f"     - {ran}",
                f"     - {setting.see_also}",
            ]
        if not mnist_available():
            lines = [
                ".. note::",
                "",
                "   This build had no MNIST data (``XPROP_DATA_DIR`` was not set), so the",
                "   examples that train on it are shown with their code but without output.",
                "",
                *lines,
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=""), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("gallery-settings", GallerySettings)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
