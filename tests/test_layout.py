"""The package's layering, read from the source: which rooms may import which, no borrowed private
names, short functions. Every import counts, including the ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Room of a module: its first two name parts (arc_jax.convert is the top-level convert/ folder).
LOWEST = {"arc_jax.errors", "arc_jax.model"}
MIDDLE = {"arc_jax.config_loading", "arc_jax.convert", "arc_jax.data", "arc_jax.evaluation", "arc_jax.inference",
          "arc_jax.prompts", "arc_jax.sharding", "arc_jax.train"}
HIGHEST = {"arc_jax.cli", "arc_jax.demo", "arc_jax.tools"}
# Functions allowed past the length bar, with why.
LONG_FUNCTIONS: dict[str, str] = {}
MAX_FUNCTION_LINES = 80


def _modules():
    for folder, package in ((ROOT / "arc_jax", "arc_jax"), (ROOT / "convert", "arc_jax.convert")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            yield ".".join((package, *parts)), path, ast.parse(path.read_text(), str(path))


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(module: str, path: Path, tree: ast.Module):
    """(imported module, imported names) for every import statement, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            yield base, tuple(alias.name for alias in node.names)


MODULES = list(_modules())


def test_rooms_import_only_rooms_below_or_beside_them():
    wrong = []
    for module, path, tree in MODULES:
        room = _room(module)
        for target, _ in _imports(module, path, tree):
            if not target.startswith("arc_jax"):
                continue
            other = _room(target)
            if other == room:
                continue
            if room in LOWEST and other != "arc_jax.errors":
                wrong.append(f"{module} imports {target}")
            elif room == "arc_jax.convert" and other not in LOWEST:
                wrong.append(f"{module} imports {target}")
            elif room in MIDDLE and other in HIGHEST:
                wrong.append(f"{module} imports {target}")
            elif room in HIGHEST - {"arc_jax.cli"} and other == "arc_jax.cli":
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_every_module_belongs_to_a_room():
    rooms = {_room(module) for module, _, _ in MODULES} - {"arc_jax", "arc_jax.__main__"}
    assert rooms <= LOWEST | MIDDLE | HIGHEST, rooms - (LOWEST | MIDDLE | HIGHEST)


def test_no_module_imports_another_modules_private_names():
    borrowed = [f"{module} imports {target}.{name}"
                for module, path, tree in MODULES for target, names in _imports(module, path, tree)
                if target.startswith("arc_jax") and target != module
                for name in names if name.startswith("_") and not name.startswith("__")]
    assert not borrowed, "\n".join(borrowed)


@pytest.mark.parametrize("module,path,tree", MODULES, ids=[m for m, _, _ in MODULES])
def test_functions_are_short(module, path, tree):
    long = [f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_FUNCTIONS]
    assert not long, "\n".join(long)


def test_sharding_asks_the_model_not_the_trainer():
    (path, tree), = [(path, tree) for module, path, tree in MODULES if module == "arc_jax.sharding"]
    assert not [t for t, _ in _imports("arc_jax.sharding", path, tree) if t.startswith("arc_jax.train")]
