"""The package's imports go one way: down the layers, never in a circle (lazy imports inside functions count).

Layers, bottom up: errors/tasks/allocator, io, data, nn, weights, inference, evaluation, train, serve, cli. A module may
import from its own layer or any layer below. `if TYPE_CHECKING:` blocks are skipped: they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "decrappify"

#: First name below `decrappify` -> layer number; a higher layer may import a lower one, never the reverse.
LAYERS: dict[str, int] = {
    "": 0,  # the package itself (__version__)
    "errors": 0,
    "tasks": 0,
    "openmp_wait": 0,  # set by the CLI before torch loads
    "allocator": 0,  # process-wide malloc settings, used by the inference runners and training
    "io": 1,
    "data": 2,
    "nn": 3,
    "weights": 4,
    "inference": 5,
    "evaluation": 6,
    "train": 7,
    "serve": 8,
    "cli": 9,
    "__main__": 10,
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth, outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _import_nodes(child)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _import_nodes(node)


def imported_modules(path: Path, modules: set[str], root: Path) -> set[str]:
    """The package's modules that `path` imports (a `from X import name` counts `X.name` when that is a module)."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            if candidate in modules:
                found.add(candidate)
            elif base in modules:
                found.add(base)
    found.discard(this)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    return {module_name(path, root): imported_modules(path, modules, root) for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int:
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else ""
    if first not in LAYERS:
        raise AssertionError(f"{module}: no layer assigned; add its folder to LAYERS in this test")
    return LAYERS[first]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward_imports(import_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    root = tmp_path / "decrappify"
    (root / "nn").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "nn" / "__init__.py").write_text("")
    (root / "weights.py").write_text("from decrappify.nn.models import create_model\n")
    (root / "nn" / "models.py").write_text("from decrappify.nn import unet\n")
    (root / "nn" / "unet.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from decrappify.nn.models import create_model\n"
        "def load():\n    from decrappify.weights import load_into\n"
    )
    graph = import_graph(root)
    assert find_cycle(graph) == ["decrappify.nn.models", "decrappify.nn.unet", "decrappify.weights",
                                 "decrappify.nn.models"]  # fmt: skip
    assert upward_imports(graph) == ["decrappify.nn.unet imports decrappify.weights"]


@pytest.mark.parametrize("argv", [["--help"], ["models"]])
def test_light_commands_do_not_load_torch(argv: list[str]) -> None:
    code = (
        "import sys\nfrom decrappify.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
