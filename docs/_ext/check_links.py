"""Check the built site's internal links: every local ``href``/``src`` names a file that
exists, and every ``#anchor`` an ``id`` (or ``name``) in the page it points at.

``sphinx-build -W`` catches a broken ``{doc}`` or ``{ref}`` but not all: a Markdown link to a
file outside the site (``[x](../notebooks/ch07_cnn.md)``), an anchor of a heading that was
renamed, a link written as plain HTML.  This scans the HTML that was actually written.

Markdown files read outside the site (the README, on GitHub) are checked too, when named
after the site: each relative link names a file of the repository, and an anchor of a
documentation page (``docs/NAME.md#anchor``) an id in the built ``NAME.html``, one of the
file itself (``#anchor``) a heading of it (GitHub's rule: lower case, punctuation dropped,
spaces to hyphens).

Usage (``nox -s docs`` runs it after ``sphinx-build``)::

    python docs/_ext/check_links.py docs/_build/html README.md benchmarks/README.md

Exit status 0 when every link resolves, 1 otherwise, listing each dead link with the page
that holds it.  Standard library only.  External links (``https:``, ``mailto:`` ...) are not
checked: the build is offline.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Folders of files Sphinx copies verbatim (MathJax, the theme's scripts): not our pages.
SKIP_DIRS = {"_static", "_sources"}
DOCS = Path(__file__).resolve().parents[1]  # the documentation's sources: docs/
LINK_ATTRS = {("a", "href"), ("link", "href"), ("img", "src"), ("script", "src")}


class _Page(HTMLParser):
    """The ids a page defines and the links it holds (tag, attribute value)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif (tag, name) in LINK_ATTRS:
                self.links.append(value)


def _pages(root: Path) -> dict[Path, _Page]:
    pages = {}
    for path in sorted(root.rglob("*.html")):
        if SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            continue
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        page.close()
        pages[path.resolve()] = page
    return pages


def _ids(path: Path, pages: dict[Path, _Page]) -> set[str]:
    page = pages.get(path)
    if page is None:  # a page under _static, say: parse it on demand
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path] = page
    return page.ids


def dead_links(root: Path) -> list[str]:
    """Every dead internal link under the built site ``root``, as ``page: link (why)``."""
    root = root.resolve()
    pages = _pages(root)
    dead = []
    for path, page in list(pages.items()):
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # external (https:, mailto:, data:, javascript: ...)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(root)}: {link}"
            if not target.is_relative_to(root):
                dead.append(f"{where} (outside the site: {target})")
            elif not target.is_file():
                dead.append(f"{where} (no file {target.relative_to(root)})")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and unquote(parts.fragment) not in _ids(target, pages)
            ):
                dead.append(f"{where} (no id {parts.fragment!r} in {target.relative_to(root)})")
    return dead


_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")  # [label](target) and ![alt](target)
_MD_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)  # code, not links


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: ``## On a GPU`` -> ``on-a-gpu``."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def markdown_dead_links(path: Path, site: Path) -> list[str]:
    """Every dead relative link of the Markdown file ``path`` (in the repository whose
    documentation ``site`` is built from ``docs/``), as ``file: link (why)``."""
    site = site.resolve()
    text = _MD_FENCE.sub("", path.read_text(encoding="utf-8"))
    headings = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    dead = []
    for link in _MD_LINK.findall(text):
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            continue
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path.resolve()
        where = f"{path}: {link}"
        if not target.exists():
            dead.append(f"{where} (no file {target})")
        elif parts.fragment and target == path.resolve():
            if parts.fragment not in headings:
                dead.append(f"{where} (no heading with the anchor {parts.fragment!r})")
        elif parts.fragment and target.suffix == ".md" and target.is_relative_to(DOCS):
            page = site / target.relative_to(DOCS).with_suffix(".html")
            if not page.is_file() or parts.fragment not in _ids(page, {}):
                dead.append(f"{where} (no id {parts.fragment!r} in the built {page.name})")
    return dead


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "docs/_build/html")
    if not (root / "index.html").is_file():
        print(f"check_links: {root} holds no built site (no index.html)", file=sys.stderr)
        return 2
    dead = dead_links(root)
    for markdown in args[1:]:
        dead += markdown_dead_links(Path(markdown), root)
    for line in dead:
        print(f"dead link: {line}", file=sys.stderr)
    pages = sum(1 for _ in root.rglob("*.html"))
    if dead:
        print(f"check_links: {len(dead)} dead internal link(s) in {root}", file=sys.stderr)
        return 1
    also = f" and of {', '.join(args[1:])}" if args[1:] else ""
    print(f"check_links: every internal link and anchor of {pages} pages{also} resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
