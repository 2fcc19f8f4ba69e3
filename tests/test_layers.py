"""The package is layered one way down, with no import cycles (imports inside functions count).

    cli -> cycle -> report, provenance -> indicators, impact, progress, plots, synth
        -> schema, sizeclass, survey, disclosure, engines, spark, io, ingest -> contract, results

A module may import from its own layer or any layer below it, never above; and the graph of
msme_eval modules has no cycle, so no import needs to hide inside a function to dodge one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "msme_eval"

LAYERS: dict[str, int] = {
    "contract": 0, "results": 0,
    "schema": 1, "sizeclass": 1, "survey": 1, "disclosure": 1, "engines": 1, "spark": 1,
    "io": 1, "ingest": 1,
    "indicators": 2, "impact": 2, "progress": 2, "plots": 2, "synth": 2, "plausibility": 2,
    "report": 3, "provenance": 3,
    "cycle": 4,
    "cli": 5,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every msme_eval module this file imports, at top level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("msme_eval")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("msme_eval"):
                continue
            if node.module is None or mod == "msme_eval":
                out |= {f"{mod}.{a.name}" for a in node.names}
            else:
                out.add(mod)
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py")]
    names = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        src = _module_name(p)
        deps = set()
        for m in _imports(p):
            while m not in names and "." in m:   # `from msme_eval.x import f` -> msme_eval.x
                m = m.rpartition(".")[0]
            if m in names and m != src and m != "msme_eval":
                deps.add(m)
        graph[src] = deps
    return graph


def test_every_top_level_module_has_a_layer():
    tops = {_top(m) for m in _graph()} - {""}
    assert tops <= set(LAYERS), f"give these modules a layer in LAYERS: {sorted(tops - set(LAYERS))}"


def test_imports_point_down():
    bad = []
    for src, deps in _graph().items():
        if not _top(src):
            continue
        for dep in deps:
            if LAYERS[_top(dep)] > LAYERS[_top(src)]:
                bad.append(f"{src} (layer {LAYERS[_top(src)]}) imports {dep} (layer {LAYERS[_top(dep)]})")
    assert not bad, "imports must point down the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ re-exporting its own submodules is not a cycle of concepts
    edges = {s: {d for d in ds if not (s == d.rpartition(".")[0])} for s, ds in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_function_over_100_lines(path):
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 100]
    assert not long, f"split into named steps: {long}"
