"""The package's layers point down only: no import circle, evaluation never imports training, and the
config layer loads neither torch nor snakemake.

The import graph is read from the source (every ``import softref...`` and ``from softref... import``
of every module, function bodies included), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "softref"
# What each layer may import (first two name parts: softref.<part>); a layer not listed may import
# anything below it. Lower layers never import the layers above them.
LIGHT = ("softref.names", "softref.paths", "softref.files", "softref.runtime", "softref.config")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every softref module ``path`` imports (``from softref.x import y`` counts softref.x and, when y
    is a module, softref.x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "softref"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("softref"):
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if _exists(candidate):
                    found.add(candidate)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_modules_or_layers() -> None:
    graph = _graph()
    assert len(graph) > 50
    assert _cycles(graph) == []
    # Layers (softref.data, softref.train, ...): a package importing a module of another that
    # imports it back is a circle too, even through different modules.
    layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        layers.setdefault(_layer(module), set()).update(_layer(t) for t in targets if _layer(t) != _layer(module))
    assert _cycles(layers) == []


def test_evaluation_never_imports_training() -> None:
    graph = _graph()
    offenders = {m: sorted(t for t in targets if t.startswith("softref.train"))
                 for m, targets in graph.items() if m.startswith("softref.evaluate")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_light_layer_imports_only_itself() -> None:
    graph = _graph()
    for module in LIGHT:
        assert graph[module] <= set(LIGHT), (module, graph[module] - set(LIGHT))


@pytest.mark.parametrize("module", ["softref.config", "softref.paths", "softref.names", "softref.preflight"])
def test_config_layer_loads_neither_torch_nor_snakemake(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'snakemake') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
