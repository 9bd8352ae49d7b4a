"""The package's layers (docs/architecture.md): imports run one way, nothing reaches back up,
the top level stays small, and no function or class outgrows a screen or two."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alexnet_jax"
# what each part may import from the project (besides itself)
ALLOWED = {
    "common": set(),
    "model": {"common"},
    "data": {"common"},
    "training": {"common", "model", "data"},
    "studies": {"common", "training"},
    "prediction": {"common", "model", "data", "training"},
    "main": {"common", "model", "data", "training", "studies", "prediction"},
}


def absolute_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, relative imports resolved against `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[:len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def project_imports(path: Path, package: str | None = None) -> set[str]:
    """The parts of alexnet_jax a module imports (anywhere in it, late imports and relative
    imports included); `package` is the module's package (by default, from its path)."""
    if package is None:
        package = ".".join(("alexnet_jax",) + path.relative_to(PACKAGE).parent.parts)
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = absolute_module(node, package)
            names = [module]
            if module == "alexnet_jax":
                names = [f"alexnet_jax.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("alexnet_jax."):
                parts.add(name.split(".")[1])
    return parts


def test_relative_imports_count_as_the_parts_they_reach(tmp_path):
    module = tmp_path / "layers.py"
    module.write_text("from ..training import steps\nfrom . import init\n"
                      "from .. import data\nfrom ...elsewhere import x\n")
    assert project_imports(module, "alexnet_jax.model") == {"training", "model", "data"}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(
    p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    part = part_of(path)
    if part == "__init__":
        return
    reaching = project_imports(path) - ALLOWED[part] - {part}
    assert not reaching, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(reaching)}"


def test_the_top_level_holds_at_most_four_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 4, modules
    assert set(ALLOWED) - {"main"} <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}


def test_no_function_or_class_outgrows_about_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 90:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
                                f"({length} lines)")
    assert not long, long
