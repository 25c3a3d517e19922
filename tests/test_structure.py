"""The package's structure: no import cycles, and importing xprop changes nothing else.

**Import cycles.**  Every module under ``xprop/`` is parsed (not imported) and every
``import`` / ``from ... import`` of an xprop module becomes an edge, wherever it stands: at
module level *and* inside functions, since a deferred import is still a dependency, only one
that hides a cycle until the day the function runs first at the wrong moment.  Only the
blocks under ``if TYPE_CHECKING:`` are skipped: they never run.  ``from xprop.x import y``
is an edge to ``xprop.x.y`` when that is a module (a file or a package), else to ``xprop.x``;
an import of a name that is no module (a former path such as ``xprop.layers``) counts for the
nearest enclosing module.  A package is its ``__init__``.

The rule, and why: a cycle is a set of modules each of which needs another to be imported
(or, for a deferred import, importable) before it can work — so none of them can be
understood, tested or loaded without all the others, and which one Python finishes first
depends on who imported first.  Hence:

- a package ``__init__`` importing its own submodules is an edge like any other (it is how a
  package exports its names); the implicit import of a parent package that Python performs
  before a submodule is *not* an edge: the parent always starts first, and an ``__init__``
  that imports its children would otherwise form a cycle with every one of them;
- a submodule that imports its own package *explicitly* (``from xprop.libraries import
  library_for`` inside ``xprop/libraries/cupy.py``, or ``import xprop`` anywhere) is an edge,
  and with the ``__init__`` importing that submodule it is a real cycle: the ``__init__`` may
  not have defined the name yet.  Nothing is excluded from the graph, not even the top-level
  ``xprop/__init__.py``, which imports almost everything: no module may import ``xprop``
  itself (``__version__`` lives in ``xprop._version``);
- a module importing itself is not a cycle.

The test fails with each cycle's path, e.g. ``xprop.backend -> xprop.auto -> ... ->
xprop.backend``, and the file and line of every edge on it.

**Floors.**  The modules stand on floors (:data:`FLOORS`: the ground — namespaces, files, the
array libraries —, then the checks and backends, what layers and steps compute with, the
layers, the training steps, the networks, and the package's top), and every import goes
down or stays on its floor: a lower floor can be read and tested without the ones above.
``xprop.nets`` and ``xprop.training`` do not import each other at module level (a network
compiles its step through one deferred import).

**Import side effects.**  Importing a library must not change the process it is imported
into: not its umask, its environment, its hooks, signal handlers, logging or warning
filters, and it must not start threads or import the heavy array libraries (they load when a
backend asks for them).  The one effect allowed is registering things with xprop itself
(the built-in array libraries, the backend name ``"auto"``, the former module paths).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "xprop"

# --------------------------------------------------------------------------------------
# Import cycles
# --------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package: its dotted name -> its file."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """``(line, base module, imported names)`` of every import outside ``if TYPE_CHECKING:``.

    ``import a.b`` gives ``(line, "a.b", [])``; ``from a import b, c`` gives
    ``(line, "a", ["b", "c"])`` with ``level`` dots resolved by the caller (the level is
    returned as leading dots on the base).
    """
    found: list[tuple[int, str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # only the ``else:`` of a TYPE_CHECKING block runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an import of ``name`` loads: ``name`` or its nearest enclosing module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported xprop module -> "file:line" of the first such import}."""
    modules = _modules()
    graph: dict[str, dict[str, str]] = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, base, names in _imports(ast.parse(path.read_text(), str(path))):
            level = len(base) - len(base.lstrip("."))
            if level:  # relative: from .x import y, from .. import z
                anchor = package.rsplit(".", level - 1)[0] if level > 1 else package
                base = ".".join(filter(None, [anchor, base[level:]]))
            if base.split(".")[0] != "xprop":
                continue
            candidates = [f"{base}.{n}" for n in names if n != "*"] or [base]
            for candidate in candidates:
                target = _resolve(candidate, modules)
                if target is not None and target != name:
                    where = f"{path.relative_to(ROOT).as_posix()}:{line}"
                    graph[name].setdefault(target, where)
    return graph


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The shortest cycle (``[a, b, ..., a]``) through each edge that lies on one, deduplicated.

    Every edge on a cycle is named by at least one of them: the list says which imports to
    remove.  Edges on a cycle are those inside a strongly connected component.
    """
    component_of = {v: i for i, c in enumerate(_components(graph)) for v in c}
    cycles: dict[tuple[str, ...], list[str]] = {}
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if component_of[a] != component_of[b]:
                continue
            back = _shortest_path(graph, b, a)
            cycle = [a, *back]
            start = cycle.index(min(cycle[:-1]))  # one rotation per cycle
            key = tuple(cycle[start:-1] + cycle[:start])
            cycles.setdefault(key, [*key, key[0]])
    return sorted(cycles.values())


def _components(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def _shortest_path(graph: dict[str, dict[str, str]], start: str, goal: str) -> list[str]:
    """``[start, ..., goal]``, a shortest path along the edges (breadth first)."""
    parents = {start: start}
    frontier = [start]
    while goal not in parents:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        if not following:
            raise AssertionError(f"no path from {start} to {goal}")
        frontier = following
    path = [goal]
    while path[-1] != start:
        path.append(parents[path[-1]])
    return path[::-1]


def test_the_cycle_finder_finds_a_cycle_and_its_path() -> None:
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {"a": ""}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": ""}, "b": {}}) == []
    # Two cycles through one module: each is named, so every edge on a cycle is listed.
    graph = {"a": {"b": "", "c": ""}, "b": {"a": ""}, "c": {"a": ""}}
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "c", "a"]]


def test_the_graph_sees_deferred_imports_and_skips_type_checking() -> None:
    graph = import_graph()
    # xprop/nets/network.py imports compile_step inside Network.compile_step: deferred,
    # and still an edge.
    assert "xprop.training.compile" in graph["xprop.nets.network"]
    assert "xprop.distributed.collectives" in graph["xprop.distributed"]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from xprop.training.step import TrainStep\n"
        "else:\n    import xprop.backend\n"
        "def f():\n    from xprop.nets import network\n"
    )
    found = {base for _, base, _ in _imports(ast.parse(source))}
    assert found == {"typing", "xprop.backend", "xprop.nets"}


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    report = []
    for cycle in cycles:
        report.append(" -> ".join(cycle))
        report += [f"    {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    assert not cycles, "import cycles in xprop:\n" + "\n".join(report)


# --------------------------------------------------------------------------------------
# Import side effects
# --------------------------------------------------------------------------------------

# Imports every module of the package in a fresh interpreter and reports what changed.
_IMPORT_EVERYTHING = """
import importlib, json, logging, os, pkgutil, signal, sys, threading, warnings
import array_api_compat, numpy  # xprop's dependencies: their own effects are not xprop's

umask_calls = []
real_umask = os.umask
os.umask = lambda mask: umask_calls.append(mask) or real_umask(mask)
signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
before = {
    "environ": dict(os.environ),
    "cwd": os.getcwd(),
    "excepthook": id(sys.excepthook),
    "displayhook": id(sys.displayhook),
    "threads": threading.active_count(),
    "signals": [id(signal.getsignal(s)) for s in signals],
    "root logging handlers": len(logging.getLogger().handlers),
    "warning filters": len(warnings.filters),
}

import xprop
for module in pkgutil.walk_packages(xprop.__path__, "xprop."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

after = {
    "environ": dict(os.environ),
    "cwd": os.getcwd(),
    "excepthook": id(sys.excepthook),
    "displayhook": id(sys.displayhook),
    "threads": threading.active_count(),
    "signals": [id(signal.getsignal(s)) for s in signals],
    "root logging handlers": len(logging.getLogger().handlers),
    "warning filters": len(warnings.filters),
}
heavy = ("jax", "torch", "cupy", "mpi4py", "array_api_strict", "matplotlib", "pooch", "tqdm")
print(json.dumps({
    "umask calls": umask_calls,
    "changed": sorted(k for k in before if before[k] != after[k]),
    "heavy imports": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
}))
"""


def test_importing_xprop_leaves_the_process_alone() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XPROP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["umask calls"] == [], "importing xprop set the umask (read it, don't set it)"
    assert report["changed"] == [], f"importing xprop changed the process: {report['changed']}"
    assert report["heavy imports"] == [], (
        f"importing xprop imported {report['heavy imports']}: import them where they are used"
    )


# --------------------------------------------------------------------------------------
# Floors: every import goes down (or stays on its floor), never up
# --------------------------------------------------------------------------------------

#: The package's floors, lowest first.  A module may import modules of its own floor and
#: of the floors below, never of a floor above: the lower floors can be read, tested and
#: changed without the ones above them.  A name ending in ``.`` means the package and all
#: its modules.
FLOORS = [
    (
        "ground: namespaces, files, the array libraries, the type aliases, MPI's plumbing",
        ["xprop._version", "xprop._namespace", "xprop._differences", "xprop.files",
         "xprop.libraries.", "xprop.typing", "xprop.distributed.errors", "xprop.distributed.abort",
         "xprop.distributed.placement", "xprop.distributed.mpi"],
    ),
    ("the checks at the door, constants, backends", ["xprop.checks", "xprop._constants",
                                                       "xprop.backend"]),
    (
        "what layers and steps compute with",
        ["xprop._labels", "xprop._sums", "xprop._accuracy", "xprop.gradcheck", "xprop.gradient",
         "xprop.optimizers", "xprop.checkpoint", "xprop.datasets", "xprop.distributed."],
    ),
    ("layers (the nodes of the graph)", ["xprop.nn."]),
    ("training steps and the Trainer", ["xprop.training."]),
    ("networks", ["xprop.nets."]),
    ("the top: the package, auto, info", ["xprop", "xprop.auto", "xprop.info", "xprop.__main__"]),
]  # fmt: skip


def floor_of(module: str) -> int:
    """The floor of ``module`` (its index in :data:`FLOORS`)."""
    for i, (_, names) in enumerate(FLOORS):
        for name in names:
            if module == name or (name.endswith(".") and (module + ".").startswith(name)):
                return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in tests/test_structure.py")


def test_every_module_is_on_a_floor_and_no_import_goes_up() -> None:
    graph = import_graph()
    up = [
        f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})  ({where})"
        for a, targets in graph.items()
        for b, where in targets.items()
        if floor_of(b) > floor_of(a)
    ]
    assert not up, "imports that go up a floor:\n" + "\n".join(up)


def test_nets_and_training_do_not_import_each_other_at_module_level() -> None:
    """A network compiles its step through a deferred import (``Network.compile_step``);
    nothing else crosses between the two packages."""
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        other = {"xprop.nets": "xprop.training", "xprop.training": "xprop.nets"}.get(
            ".".join(name.split(".")[:2])
        )
        if other is None:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(other):
                crossing.append(f"{name}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Import):
                crossing += [
                    f"{name}:{node.lineno} imports {alias.name}"
                    for alias in node.names
                    if alias.name.startswith(other)
                ]
    assert not crossing, "\n".join(crossing)


def test_floors_catch_an_import_going_up() -> None:
    assert floor_of("xprop.nn.layers") < floor_of("xprop.nets.network")
    assert floor_of("xprop.libraries.cupy") == 0
    graph = {"xprop.nn.layers": {"xprop.nets.network": "x.py:1"}}
    up = [(a, b) for a, t in graph.items() for b in t if floor_of(b) > floor_of(a)]
    assert up == [("xprop.nn.layers", "xprop.nets.network")]
