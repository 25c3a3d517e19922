"""The documentation's own machinery: the link check of the built site, and where each page
says its source is.

``docs/_ext/check_links.py`` (run by ``nox -s docs`` after the build) is checked here on
small made-up sites; ``docs/_ext/xprop_pages.py`` maps each page to its file in the
repository.  The tests named ``built_site`` read the site that ``$XPROP_BUILT_SITE`` names,
and skip without it: ``nox -s docs`` sets it after building ``docs/_build/html`` (a site left
from an older build would test the old code).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "docs" / "_ext"

REPOSITORY = "https://github.com/xprop/xprop"  # html_theme_options in docs/conf.py


@pytest.fixture(scope="module")
def ext():
    """docs/_ext importable (its modules import Sphinx only when Sphinx runs them)."""
    sys.path.insert(0, str(EXT))
    try:
        import check_links
        import xprop_pages

        yield check_links, xprop_pages
    finally:
        sys.path.remove(str(EXT))


def _site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    return root


def test_check_links_passes_a_site_whose_links_resolve(ext, tmp_path):
    check_links, _ = ext
    site = _site(
        tmp_path,
        {
            "index.html": (
                '<h1 id="top">x</h1><a href="#top">self</a> <a href="a/page.html#sec">a</a>'
                '<a href="https://example.org/missing.html">external</a>'
                '<a href="mailto:x@example.org">mail</a> <img src="_images/p.png">'
                '<a href="a/">folder</a> <a href="a/page.html?x=1#sec">query</a>'
            ),
            "a/index.html": '<a href="../index.html#top">up</a>',
            "a/page.html": '<section id="sec"><a name="old"></a></section>'
            '<a href="page.html#old">legacy anchor</a> <a href="%70age.html">quoted</a>',
            "_images/p.png": "",
        },
    )
    assert check_links.dead_links(site) == []
    assert check_links.main([str(site)]) == 0


def test_check_links_names_each_dead_link_and_anchor(ext, tmp_path, capsys):
    check_links, _ = ext
    site = _site(
        tmp_path / "html",
        {
            "index.html": (
                '<a href="gone.html">no file</a> <a href="a.html#nowhere">no anchor</a>'
                '<a href="#self-missing">own anchor</a> <img src="_images/none.png">'
                '<a href="../../notebooks/x.md">outside</a> <a href="a.html#here">fine</a>'
            ),
            "a.html": '<p id="here"></p>',
        },
    )
    dead = check_links.dead_links(site)
    assert len(dead) == 5, dead
    assert "index.html: gone.html (no file gone.html)" in dead
    assert "index.html: a.html#nowhere (no id 'nowhere' in a.html)" in dead
    assert "index.html: #self-missing (no id 'self-missing' in index.html)" in dead
    assert "index.html: _images/none.png (no file _images/none.png)" in dead
    assert any(d.startswith("index.html: ../../notebooks/x.md (outside the site") for d in dead)
    assert check_links.main([str(site)]) == 1
    err = capsys.readouterr().err
    assert "dead link: index.html: gone.html" in err
    assert "5 dead internal link(s)" in err
    assert check_links.main([str(tmp_path / "nothing")]) == 2  # not a built site


def test_check_links_reads_the_readme_as_github_does(ext, tmp_path):
    check_links, _ = ext
    assert check_links.github_anchor("On a GPU") == "on-a-gpu"
    assert check_links.github_anchor("Chapter 6: training techniques") == (
        "chapter-6-training-techniques"
    )
    assert check_links.github_anchor("Types: `xprop.typing`") == "types-xproptyping"
    # a made-up site built from docs/: getting-started.html has one anchor
    site = _site(tmp_path / "html", {"index.html": "", "getting-started.html": '<p id="run">'})
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n## On a GPU\n\n"
        f"[ok]({ROOT}/docs/getting-started.md#run) [ok](#on-a-gpu) [ok](README.md)\n"
        f"[bad]({ROOT}/docs/getting-started.md#gone) [bad](#on-the-gpu) [bad](nothing.md)\n"
        "```bash\n[not a link](in-a-code-block.md)\n```\n",
        encoding="utf-8",
    )
    dead = check_links.markdown_dead_links(readme, site)
    assert [d.split(": ", 1)[1].split(" (")[0] for d in dead] == [
        f"{ROOT}/docs/getting-started.md#gone",
        "#on-the-gpu",
        "nothing.md",
    ], dead
    # the repository's own Markdown against the real pages' anchors (built or not: the
    # files at least must exist)
    for markdown in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        assert [d for d in check_links.markdown_dead_links(markdown, site) if "no file" in d] == []


def test_pages_name_their_real_source(ext):
    _, pages = ext
    docs = ROOT / "docs"
    # the gallery's pages are generated from the examples: the script, not docs/auto_examples
    assert pages.repository_file("auto_examples/train_convnet", None) == (
        "examples/train_convnet.py"
    )
    assert pages.repository_file("auto_examples/index", None) == "examples/GALLERY_HEADER.rst"
    assert pages.repository_file("auto_examples/sg_execution_times", None) is None
    assert pages.repository_file("sg_execution_times", docs / "sg_execution_times.rst") is None
    # a notebook page's docs/NAME.md links to notebooks/NAME.md
    for name in ("ch05_backprop", "ch07_cnn"):
        assert (docs / f"{name}.md").is_symlink()
        assert pages.repository_file(name, docs / f"{name}.md") == f"notebooks/{name}.md"
    assert pages.repository_file("training", docs / "training.md") == "docs/training.md"
    # every example that has a gallery page has its script
    for script in (ROOT / "examples").glob("[!_]*.py"):
        page = f"auto_examples/{script.stem}"
        assert pages.repository_file(page, None) == f"examples/{script.name}"


def test_reexported_names_link_where_they_are_defined(ext):
    _, pages = ext
    assert pages.defined_as("xprop.TwoLayerNet") == "xprop.nets.two_layer_net.TwoLayerNet"
    assert pages.defined_as("xprop.Trainer") == "xprop.training.trainer.Trainer"
    assert pages.defined_as("xprop.Backend.asarray") == "xprop.backend.Backend.asarray"
    assert pages.defined_as("xprop.im2col") == "xprop.nn.im2col.im2col"
    # already where it is defined: the same name (Sphinx found it, or it is not documented)
    name = "xprop.nets.network.Network"
    assert pages.defined_as(name) == name
    assert pages.defined_as("xprop.distributed.INSTALL_HINT") is None  # a string
    assert pages.defined_as("xprop.NoSuchThing") is None
    assert pages.defined_as("numpy.ndarray") is None  # not ours to resolve


def _tracked_files() -> set[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files are in the repository")
    return set(out.splitlines())


def built_site() -> Path:
    """The built site ``$XPROP_BUILT_SITE`` names (relative to the repository), or skip."""
    folder = os.environ.get("XPROP_BUILT_SITE")
    if not folder:
        pytest.skip("XPROP_BUILT_SITE names no built site (nox -s docs sets it after building)")
    site = ROOT / folder
    assert (site / "index.html").is_file(), f"XPROP_BUILT_SITE={folder}: no index.html there"
    return site


def test_built_site_edit_and_view_links_name_files_in_git(ext):
    site = built_site()
    tracked = _tracked_files()
    link = re.compile(rf'href="{re.escape(REPOSITORY)}/(?:edit|blob)/main/([^"?#]+)')
    named: dict[str, set[str]] = {}
    for page in site.rglob("*.html"):
        for path in link.findall(page.read_text(encoding="utf-8")):
            named.setdefault(path, set()).add(page.relative_to(site).as_posix())
    assert "examples/train_mnist.py" in named  # the gallery's pages link to their scripts
    assert "notebooks/ch07_cnn.md" in named
    assert "docs/training.md" in named
    untracked = {path: sorted(where)[:3] for path, where in named.items() if path not in tracked}
    assert untracked == {}, f"pages link to files that are not in git: {untracked}"
