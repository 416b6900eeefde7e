"""The library's module-level imports form no cycle (a deferred import hiding one counts as one: config.parse
and agents.registry import each other at module level or not at all), and no module uses Hydra's internals."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, known: set[str], everywhere: bool) -> set[str]:
    """The mtrl modules `path` imports (module level only unless `everywhere`)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if everywhere else tree.body
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def import_graph(everywhere: bool = False) -> dict[str, set[str]]:
    """Module -> the mtrl modules it imports, without the edges to its own packages (Python's normal layout)."""
    files = {module_name(p): p for p in (ROOT / "mtrl").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = imported(path, set(files), everywhere)
        graph[name] = {d for d in deps if d != name and not name.startswith(f"{d}.")}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_module_level_imports_have_no_cycle():
    assert cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_config_parsing_and_the_agent_registry_do_not_import_each_other_back():
    graph = import_graph(everywhere=True)  # deferred imports included
    assert "mtrl.config.parse" not in graph["mtrl.agents.registry"]
    assert "mtrl.agents.registry" in import_graph()["mtrl.config.parse"]


@pytest.mark.parametrize("first", ["mtrl.agents.registry", "mtrl.config.parse", "mtrl.agents.base", "mtrl.cli"])
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    subprocess.run([sys.executable, "-c", f"import {first}"], cwd=ROOT, check=True)


#: The edge: where the command line's Hydra/OmegaConf configs are composed and turned into typed configs.
EDGE = ("cli.py", "config/parse.py", "config/resolvers.py")


def test_no_module_uses_hydra_internals_and_only_the_edge_sees_omegaconf():
    for path in (ROOT / "mtrl").rglob("*.py"):
        text = path.read_text()
        assert "hydra._internal" not in text, path
        if not str(path.relative_to(ROOT / "mtrl")).startswith(EDGE):
            assert not re.search(r"^\s*(from|import) (omegaconf|hydra)\b", text, re.M), path
