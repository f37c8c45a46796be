"""The import map of lmforge/: no module imports itself back through others (no cycles), and no
module imports a layer above its own. Every import counts, also those inside functions: a lazy
import still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmforge"

# Lowest first. A module may import its own layer and those below. Stage modules (what one verb runs
# end to end: it composes the packages below, e.g. fine-tuning then scoring next to the baselines)
# sit above every package and below the pipeline.
LAYERS: list[tuple[str, ...]] = [
    ("lmforge.config", "lmforge.errors", "lmforge.text", "lmforge.progress", "lmforge.version", "lmforge.batch_order"),
    ("lmforge.data", "lmforge.corpora"),
    ("lmforge.tokenize",),
    ("lmforge.model",),
    ("lmforge.train",),
    ("lmforge.serve",),
    ("lmforge.eval",),
    ("lmforge.finetune",),
    ("lmforge.data.prepare", "lmforge.tokenize.make_shards", "lmforge.train.pretrain", "lmforge.finetune.stage",
     "lmforge.eval.evaluate"),
    ("lmforge.pipeline",),
    ("lmforge.cli", "lmforge.config_reference", "lmforge.__main__", "lmforge"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the lmforge modules it imports (``from pkg import mod`` counts as importing mod)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names ``module``."""
    best, length = -1, -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_a_cycle_and_an_upward_import():
    graph = {"lmforge.data.a": {"lmforge.data.b"}, "lmforge.data.b": {"lmforge.data.a", "lmforge.serve.x"},
             "lmforge.serve.x": set()}
    assert cycles(graph) == [["lmforge.data.a", "lmforge.data.b"]]
    assert layer_of("lmforge.serve.x") > layer_of("lmforge.data.b")
    assert layer_of("lmforge.finetune.stage") > layer_of("lmforge.model.peft")
    real = import_graph()
    assert "lmforge.data.readers" in real["lmforge.data.prepare"]  # the walker reads real imports


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_upward_imports():
    graph = import_graph()
    upward = [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a]) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_no_private_names_imported_across_modules():
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmforge"):
                private += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
