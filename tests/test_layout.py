"""The house plan, checked: layers whose imports only point down, no import circle, no private name borrowed from
another module, no source file (package or benchmark script) over 500 lines. Every ``import`` counts, also one
inside a function: a lazy import still ties the two modules together.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("crawler", "kofinsent")
MAX_LINES = 500

# Lowest first: a unit may import only units listed before it (or itself). A unit is a subpackage of kofinsent, a
# top-level module of kofinsent, or the whole crawler (which knows nothing of kofinsent).
LAYERS = (
    "crawler",
    "kofinsent.labels", "kofinsent.paths", "kofinsent.cache", "kofinsent.runs",
    "kofinsent.backends", "kofinsent.prompts", "kofinsent.dataset", "kofinsent.evaluation", "kofinsent.tiny",
    "kofinsent.training", "kofinsent.export", "kofinsent.report", "kofinsent.experiment", "kofinsent.cli",
)


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import of the package's own code in ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    out.append((f"{target}.{a.name}", None))
                elif target in MODULES:
                    out.append((target, a.name))
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return "crawler" if parts[0] == "crawler" else ".".join(parts[:2])


def _is_own_package(a: str, b: str) -> bool:
    """A package's __init__ importing its own modules (or a module its package) is the package, not an arrow."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for module in MODULES:
        ua = _unit(module)
        if ua == "kofinsent":  # the package's own __init__: version only
            continue
        for target, _ in _imports(module):
            ub = _unit(target)
            if ub in (ua, "kofinsent"):
                continue
            assert ua in LAYERS and ub in LAYERS, f"{module} -> {target}: add the unit to LAYERS"
            if LAYERS.index(ub) > LAYERS.index(ua):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    graph = defaultdict(set)
    for module in MODULES:
        for target, _ in _imports(module):
            if target != module and not _is_own_package(module, target):
                graph[module].add(target)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in MODULES:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        circles.append(" <-> ".join(sorted(component)))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_private_name_is_imported_from_another_module() -> None:
    borrowed = [f"{module} <- {target}.{name}" for module in MODULES for target, name in _imports(module)
                if name and name.startswith("_") and not name.startswith("__") and target != module]
    assert not borrowed, "private names imported across modules:\n" + "\n".join(borrowed)


SOURCES = sorted(str(p.relative_to(ROOT)) for p in [*MODULES.values(), *(ROOT / "benchmarks").glob("*.py")])


@pytest.mark.parametrize("source", SOURCES)
def test_source_file_is_at_most_500_lines(source: str) -> None:
    n = len((ROOT / source).read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{source} has {n} lines (at most {MAX_LINES})"
