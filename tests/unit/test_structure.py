"""The tree's shape: no import circle, no import that runs up a floor, small
modules, a `graph/` whose folder names say where things live."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "telemetry",
    "batching",
    "models",
    "retrieval",
    "releases",
    "tenants",
    "evals",
    "graph",
    "load_tests",
    "scripts",
)
LOWER = ("telemetry", "batching", "models", "retrieval", "releases", "tenants", "evals")
#: graph/'s floors, lowest first: a module may import its own floor or lower.
#: The load generator: it measures any OpenAI-style server over HTTP.
GENERATOR = ("runner", "scenarios", "sse", "stats", "report", "plot", "cli")
FLOORS = (
    "graph",
    "graph.gate",
    "graph.routing",
    "graph.api",
    "graph.serve",
    "graph.cli",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Our modules that `name` imports anywhere (functions, TYPE_CHECKING too)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def _floor(name: str) -> int:
    best = 0
    for i, floor in enumerate(FLOORS):
        if name == floor or name.startswith(floor + "."):
            best = i
    return best


def test_no_import_circle_anywhere() -> None:
    assert _cycles() == []


def test_lower_floors_never_import_graph() -> None:
    upward = [
        (name, dep)
        for name, deps in GRAPH.items()
        if name.split(".")[0] in LOWER
        for dep in deps
        if dep.split(".")[0] in ("graph", "load_tests")
    ]
    assert upward == []


def test_no_import_runs_up_inside_graph() -> None:
    upward = [
        (name, dep)
        for name, deps in GRAPH.items()
        if name.startswith("graph.")
        for dep in deps
        if dep.startswith("graph") and _floor(dep) > _floor(name)
    ]
    assert upward == []


def test_graph_never_imports_the_benchmarks() -> None:
    assert [
        (n, d)
        for n, deps in GRAPH.items()
        if n.startswith("graph")
        for d in deps
        if d.startswith("load_tests")
    ] == []


def test_load_generator_speaks_http_only() -> None:
    """The generator imports nothing of ours; of the benchmarks, only the
    servers they measure (`load_tests.servers`) import the graph."""
    ours = {"graph", *LOWER}
    generator = {f"load_tests.{m}" for m in GENERATOR}
    leaks = [
        (name, dep)
        for name, deps in GRAPH.items()
        if name.startswith("load_tests") and not name.startswith("load_tests.servers")
        for dep in deps
        if dep.split(".")[0] == "graph"
        or (name in generator and dep.split(".")[0] in ours)
    ]
    assert leaks == []


def test_graph_top_level_stays_small() -> None:
    top = [p.name for p in (ROOT / "graph").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= 12, sorted(top)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_and_says_what_it_knows(name: str) -> None:
    path = MODULES[name]
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path}: over 400 lines"
    if text.strip() and name.split(".")[-1] != "__main__":
        assert ast.get_docstring(ast.parse(text)), f"{path}: no module docstring"
