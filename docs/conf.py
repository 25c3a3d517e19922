"""Sphinx configuration for the xprop documentation (MyST Markdown pages, furo theme).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (or ``nox -s docs``).
"""

from __future__ import annotations

import os
import sys

# Document the working tree, installed or not.
sys.path.insert(0, os.path.abspath(".."))

import xprop

project = "xprop"
author = "The xprop developers"
copyright = "The xprop developers"
version = xprop.__version__
release = xprop.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the built site: math renders offline too
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- MyST ---------------------------------------------------------------------------------
myst_enable_extensions = [
    "dollarmath",  # $...$ and $$...$$
    "amsmath",  # \begin{align} ... \end{align}
    "colon_fence",  # ::: directives
    "deflist",
]
myst_heading_anchors = 3

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
