"""Sphinx configuration for the xprop documentation (MyST Markdown pages, furo theme).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (or ``nox -s docs``).
The build runs code: the example gallery runs ``examples/*.py`` (sphinx-gallery, set up in
``_ext/xprop_gallery.py``) and myst-nb executes the chapter-5 and 7 notebooks, so every printed
number and figure on those pages comes from this build.  The MNIST parts run only when
``XPROP_DATA_DIR`` is set; without it the pages show their code and say why.
"""

from __future__ import annotations

import os
import sys

# Document the working tree, installed or not; the gallery's helpers live in _ext.
sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

import xprop_gallery

import xprop

# The notebook runs in a Jupyter kernel, a new process: it must import the same xprop.
ROOT = os.path.abspath("..")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (ROOT, os.environ.get("PYTHONPATH"))))

project = "xprop"
author = "The xprop developers"
copyright = "The xprop developers"
version = xprop.__version__
release = xprop.__version__

extensions = [
    "myst_nb",  # MyST Markdown pages (myst-parser) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the built site: math renders offline too
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
    "xprop_gallery",  # the gallery-settings directive
    "xprop_notebooks",  # the notebooks as plain .ipynb files, linked from their pages
    "xprop_pages",  # edit/view buttons on each page's real source; viewcode's back-links
]

# myst-nb adds .md (MyST pages and MyST notebooks); sphinx-gallery writes .rst pages.
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- MyST ---------------------------------------------------------------------------------
myst_enable_extensions = [
    "dollarmath",  # $...$ and $$...$$
    "amsmath",  # \begin{align} ... \end{align}
    "colon_fence",  # ::: directives
    "deflist",
]
myst_heading_anchors = 3

# -- the chapter-5 and chapter-7 notebooks (myst-nb) --------------------------------------
# ch05_backprop.md links to notebooks/ch05_backprop.md, ch07_cnn.md to notebooks/ch07_cnn.md.
# Executed at every build: chapter 5 in full (the book's 10000 iterations take seconds on
# NumPy), chapter 7 with its default of two epochs (the book's twenty take minutes); any
# error in a cell fails the build.  _ext/xprop_notebooks.py then writes each, executed, as a
# plain notebooks/NAME.ipynb into the site, linking to the documentation at this address:
xprop_docs_url = "https://xprop.readthedocs.io/en/latest/"
nb_execution_mode = "force" if xprop_gallery.mnist_available() else "off"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# -- the example gallery (sphinx-gallery) -------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Run each example at every build: the library may have changed, not only the script.
    "run_stale_examples": True,
    "filename_pattern": xprop_gallery.executed_pattern(),
    # _ch6.py, _graph.py: helpers, not examples (sphinx-gallery matches the file name)
    "ignore_pattern": r"(^|[\\/])_[^\\/]*\.py$",
    "within_subsection_order": "xprop_gallery.ChapterOrder",
    "reset_argv": "xprop_gallery.reset_argv",
    "image_scrapers": ("xprop_gallery.plot_files",),
    "reset_modules": ("matplotlib", "xprop_gallery.run_as_script"),
    "reset_modules_order": "both",
    "capture_repr": (),
    # The scripts read their command line: as notebooks they would not run.
    "notebook_extensions": set(),
    "download_all_examples": False,
    "show_signature": False,
}

# -- autodoc / napoleon -------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # types are in the numpy-style docstrings; hints are mostly Any
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# No network at build time: no intersphinx.  sphinx-mathjax-offline copies MathJax into
# _static, so the built pages typeset their formulas without a network connection.

# -- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"xprop {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "source_repository": "https://github.com/xprop/xprop",
    "source_branch": "main",
    "source_directory": "docs/",
}
