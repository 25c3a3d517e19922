"""Where each page of the site comes from, and links that lead back to the code.

* :func:`source_links`: the theme's "edit this page" and "view source" buttons name the file
  in the repository that the page is made of: ``examples/NAME.py`` for an example's gallery
  page (``docs/auto_examples/`` is generated, never in git), ``examples/GALLERY_HEADER.rst``
  for the gallery's index, ``notebooks/NAME.md`` for a notebook page (``docs/NAME.md`` is a
  link to it); a page generated from nothing in git (the execution times) has no buttons.
* :func:`viewcode_backlinks`: two slips of ``sphinx.ext.viewcode`` that leave dead links in
  the highlighted source pages (``_modules/``).  Its index lists modules whose source it
  could not read (``builtins``, for a documented constant such as a string), without a page;
  and a module's "[docs]" links all use the module name under which its first object was
  documented: ``xprop.distributed`` re-exports ``mpi_is_cuda_aware``, so the link of
  ``import_mpi``, documented only in ``xprop.distributed.mpi``, pointed at
  ``#xprop.distributed.import_mpi``.

* :func:`reexported`: a reference to a name the package re-exports (``xprop.TwoLayerNet``,
  ``xprop.Trainer``) links to where that object is documented, under the module that
  defines it (``xprop.nets.two_layer_net.TwoLayerNet``); Sphinx alone leaves it unlinked,
  without a warning.

``docs/_ext/check_links.py`` checks every internal link of the built site.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the tests import this module where Sphinx is not installed
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

ROOT = Path(__file__).resolve().parents[2]  # the repository
GALLERY = "auto_examples"  # sphinx_gallery_conf["gallery_dirs"]


def repository_file(pagename: str, source: Path | None) -> str | None:
    """The file in the repository (a POSIX path from its root) that page ``pagename`` is
    made of, or None for a page generated from nothing in git.  ``source`` is the page's
    source file in the documentation folder (``env.doc2path``)."""
    if pagename == "sg_execution_times" or pagename.startswith(f"{GALLERY}/"):
        name = pagename.split("/", 1)[-1]
        if name == "index":
            return "examples/GALLERY_HEADER.rst"
        script = ROOT / "examples" / f"{name}.py"
        return f"examples/{name}.py" if script.is_file() else None
    if source is None:
        return None
    path = source.resolve()  # docs/ch05_backprop.md -> notebooks/ch05_backprop.md
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else None


def source_links(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """html-page-context: point the edit and view buttons at the page's own source file."""
    if doctree is None or not context.get("page_source_suffix"):
        return  # the index, the search page, a highlighted module: no buttons anyway
    options = app.config.html_theme_options
    repo = options["source_repository"].rstrip("/")
    branch = options["source_branch"]
    path = repository_file(pagename, Path(app.env.doc2path(pagename)))
    if path is None:
        context["page_source_suffix"] = ""  # the theme shows no buttons without a suffix
        return
    # The theme formats these with the page's file name: a literal URL stays as it is.
    context["theme_source_edit_link"] = f"{repo}/edit/{branch}/{path}"
    context["theme_source_view_link"] = f"{repo}/blob/{branch}/{path}?plain=true"


def viewcode_backlinks(app: Sphinx, env: BuildEnvironment) -> None:
    """env-updated: no index entry without a page, and "[docs]" links that exist."""
    modules = getattr(env, "_viewcode_modules", None)  # viewcode's record of each module
    if not modules:
        return
    objects = env.get_domain("py").objects  # full name -> where it is documented
    for modname, entry in list(modules.items()):
        if not entry:  # a module viewcode could not read: no page to link to
            del modules[modname]
            continue
        code, tags, used, refname = entry

        def resolves(prefix: str, used: dict[str, str] = used) -> bool:
            return all(f"{prefix}.{name}" in objects for name in used)

        if not resolves(refname) and resolves(modname):
            modules[modname] = (code, tags, used, modname)


def defined_as(name: str) -> str | None:
    """Where the object ``name`` (``xprop.TwoLayerNet``) is defined, as a dotted name
    (``xprop.nets.two_layer_net.TwoLayerNet``); None if it is no xprop class or function."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not (isinstance(module, str) and isinstance(qualname, str)):
            return None  # a constant, say: no place of definition to link to
        return f"{module}.{qualname}" if module.startswith("xprop") else None
    return None


def reexported(app: Sphinx, env: BuildEnvironment, node: Any, contnode: Any) -> Any:
    """missing-reference: ``xprop.NAME`` resolved to where NAME is documented (also a bare
    ``NAME`` that a docstring of an xprop module imports)."""
    target, module = node.get("reftarget", ""), node.get("py:module") or ""
    if node.get("refdomain") != "py":
        return None
    if not target.startswith("xprop.") and module.startswith("xprop"):
        target = f"{module}.{target}"
    if not target.startswith("xprop."):
        return None
    real = defined_as(target)
    if real is None or real == target:
        return None
    py = env.get_domain("py")
    return py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], real, node, contnode)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", source_links)
    app.connect("env-updated", viewcode_backlinks)
    app.connect("missing-reference", reexported)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
