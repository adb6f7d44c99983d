"""The package's shape: no import cycles between cnnlab's modules or its sub-packages, and light leaf modules.

The graph is read from the source with `ast`, counting every import (also those inside functions and
under TYPE_CHECKING): a lazy import still ties two modules together for a reader.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab

PACKAGE_ROOT = Path(cnnlab.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """cnnlab module -> the cnnlab modules it imports (a `from package import name` counts as the package)."""
    modules = {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py") if "conf" not in p.relative_to(PACKAGE_ROOT).parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
                targets.add(node.module)
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_of(module: str) -> str:
    """cnnlab.training.run -> cnnlab.training; top-level modules (cnnlab.cli) stand for themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_find_cycle_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "cnnlab.training.bench" in graph["cnnlab.tasks.bench"]  # imported inside bench_task
    assert "cnnlab.run_folder" in graph["cnnlab.sweeps.results"]


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(t) for t in targets)
    graph = {package: targets - {package} for package, targets in packages.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("cnnlab.run_folder", ("torch", "optuna", "hydra")),
        ("cnnlab.atomic", ("torch", "optuna", "hydra")),
        ("cnnlab.errors", ("torch", "optuna", "hydra")),
        ("cnnlab.models.efficient", ("hydra", "optuna")),
    ],
)
def test_leaf_modules_import_nothing_heavy(module: str, forbidden: tuple[str, ...]) -> None:
    """Checked in a fresh interpreter: what importing the module really pulls in."""
    code = f"import sys, {module}; print(' '.join(m for m in {forbidden!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"importing {module} loads {loaded}"
