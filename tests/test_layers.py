"""The house: layers in import order, no import cycles (read from the code's own imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
#: Layers from the bottom up: a module may import its own layer and the layers below it only.
LAYERS = ("errors", "settings", "model", "plants", "method", "engine", "run", "cli")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "azopg").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The azopg modules ``name`` imports (module level, in functions and under TYPE_CHECKING alike)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        out |= {c for c in candidates if c in known and c != name and known[c].name != "__init__.py"}
    return out


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:  # the package's face
        return len(LAYERS)
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_there_are_no_import_cycles():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [m for m in GRAPH if m in reach(m)] == []


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n.count(".") >= 1 and n.split(".")[1] in LAYERS))
def test_a_layer_imports_only_itself_and_the_layers_below(name):
    above = sorted(t for t in GRAPH[name] if layer(t) > layer(name))
    assert above == [], f"{name} ({LAYERS[layer(name)]}) imports higher layers: {above}"
