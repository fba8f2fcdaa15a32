"""The package's layers, read from the source with `ast`: imports at module top, only downward, no cycles.

Layers, bottom to top (a module may import its own layer and those below it):
foundations (errors, config, io, tensor_io, published) -> library (linalg, data and its source registry,
settings, nn, represent, evaluate, topology, unlearn) -> report -> stages (every run_*, the rule runtime, the reference-checkpoint study) -> cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "kaepipe"

LAYERS = {
    "foundations": ["kaepipe.errors", "kaepipe.config", "kaepipe.io", "kaepipe.tensor_io", "kaepipe.published",
                    "kaepipe.registry"],
    "library": ["kaepipe.linalg", "kaepipe.data", "kaepipe.settings", "kaepipe.nn", "kaepipe.represent", "kaepipe.evaluate",
                "kaepipe.topology", "kaepipe.unlearn", "kaepipe.model", "kaepipe.network"],
    "report": ["kaepipe.report"],
    "stages": ["kaepipe.stages", "kaepipe.runtime", "kaepipe.reference", "kaepipe.api"],
    "top": ["kaepipe.cli", "kaepipe"],
}
RANK = {prefix: i for i, prefixes in enumerate(LAYERS.values()) for prefix in prefixes}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    """The layer of a module: that of its longest listed prefix."""
    best = max((p for p in RANK if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"module {module} is in no layer; add it to LAYERS in {__file__}")
    return RANK[best]


def kaepipe_imports(tree: ast.Module) -> list[tuple[int, str, bool]]:
    """(line, imported kaepipe module, at module top) for every kaepipe import in a module."""
    top = {id(n) for n in tree.body}
    top |= {id(c) for n in tree.body if isinstance(n, ast.If) for c in n.body}  # `if TYPE_CHECKING:` blocks
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "kaepipe":
            targets = [node.module] if node.module != "kaepipe" else [f"kaepipe.{a.name}" for a in node.names]
            for t in targets:
                out.append((node.lineno, t, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "kaepipe"]
    return out


def import_graph() -> dict[str, list[tuple[int, str, bool]]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = []
        for line, target, at_top in kaepipe_imports(ast.parse(path.read_text())):
            # `from kaepipe.x import y` may name a submodule y of package x
            resolved = target
            while resolved not in modules and "." in resolved:
                resolved = resolved.rsplit(".", 1)[0]
            if resolved != name:
                edges.append((line, resolved, at_top))
        graph[name] = edges
    return graph


GRAPH = import_graph()


def test_every_module_is_in_a_layer():
    for name in GRAPH:
        rank(name)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_at_module_top_and_downward(module):
    for line, target, at_top in GRAPH[module]:
        assert at_top, f"{module}:{line} imports {target} inside a function; import at module top"
        if target == "kaepipe":  # the package's own __init__ (version string)
            continue
        assert rank(target) <= rank(module), (
            f"{module}:{line} imports {target}, a higher layer ({rank(target)} > {rank(module)})")


def test_no_import_cycle():
    graph = {m: sorted({t for _, t, _ in edges if t != "kaepipe"}) for m, edges in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a two-module cycle and an upward import are both caught."""
    a = ast.parse("from kaepipe.report.tables import x\n")
    b = ast.parse("def f():\n    from kaepipe.nn.kae import y\n")
    (_line, target, top), = kaepipe_imports(a)
    assert rank(target) > rank("kaepipe.nn.kae") and top
    (_, _, top_b), = kaepipe_imports(b)
    assert not top_b
