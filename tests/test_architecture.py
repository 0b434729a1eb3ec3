"""The import graph has no circle: not between modules, not between the direct children of any package.

Deferred (function-level) imports count: grimp reads every import statement of a file, wherever it
stands. The layers themselves are the contracts of ``.importlinter`` (``lint-imports`` in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "selfsup", "research")


def circles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative), each sorted."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a != b:
            succ.setdefault(a, []).append(b)
            succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(succ[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def edges_of(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    return [(m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)]


def child_circles(graph: grimp.ImportGraph, edges: list[tuple[str, str]]) -> dict[str, list[list[str]]]:
    """Per package: circles between its direct children (an import of a descendant counts for the child)."""
    out = {}
    for package in sorted(m for m in graph.modules if graph.find_children(m)):
        children = graph.find_children(package)

        def child_of(module: str, children: set[str] = children) -> str | None:
            for child in children:
                if module == child or module.startswith(child + "."):
                    return child
            return None

        lifted = {(child_of(a), child_of(b)) for a, b in edges}
        found = circles(children, [(a, b) for a, b in lifted if a and b and a != b])
        if found:
            out[package] = found
    return out


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))


def test_circle_finder_sees_a_deferred_circle_and_a_children_circle():
    """The checks below can fail: a hand-made graph with a circle at each level is caught."""
    g = grimp.ImportGraph()
    for m in ("p", "p.a", "p.a.x", "p.b", "p.c"):
        g.add_module(m)
    g.add_import(importer="p.a.x", imported="p.b", line_number=12, line_contents="from p import b")  # deferred
    g.add_import(importer="p.b", imported="p.a", line_number=3, line_contents="import p.a")
    g.add_import(importer="p.c", imported="p.b", line_number=3, line_contents="import p.b")
    assert circles(g.modules, edges_of(g)) == []  # p.a.x -> p.b -> p.a: no module loop
    assert child_circles(g, edges_of(g)) == {"p": [["p.a", "p.b"]]}
    g.add_import(importer="p.a", imported="p.a.x", line_number=1, line_contents="import p.a.x")
    g.add_import(importer="p.a.x", imported="p.c", line_number=20, line_contents="import p.c")
    assert circles(g.modules, edges_of(g)) == [["p.a", "p.a.x", "p.b", "p.c"]]


def test_no_import_circle_between_modules(graph):
    assert circles(graph.modules, edges_of(graph)) == []


def test_no_import_circle_between_the_direct_children_of_a_package(graph):
    assert child_circles(graph, edges_of(graph)) == {}


def test_the_library_never_imports_the_research_code(graph):
    library = [m for m in graph.modules if m.split(".")[0] in ("curate", "selfsup")]
    taken = sorted(
        (m, i) for m in library for i in graph.find_modules_directly_imported_by(m) if i.startswith("research")
    )
    assert taken == []


@pytest.mark.skipif(
    shutil.which("lint-imports") is None, reason="import-linter is not installed (pip install -e .[dev])"
)
def test_import_contracts_are_kept():
    proc = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
