"""The package's layers (docs/architecture.md): imports run one way, nothing reaches back up,
the top level stays small, and no function or class outgrows a screen or two. Inside training/
the same holds for its rooms: the loop's modules beside it and its subpackages (checkpoints/,
processes/, records/), on floors of their own, with no cycle between any two modules."""

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
TRAINING = PACKAGE / "training"
# the rooms of training/ (its top-level modules and its subpackages), floor by floor, and what
# each may import from training/ besides itself: nothing below the loop reaches back up to it
TRAINING_ALLOWED = {
    # 1: the optimizer, the schedule, the processes of a run
    "optim": set(),
    "schedule": set(),
    "processes": set(),
    # 2: the pure steps, the state, the config's checks and resume policy, what a run records
    "steps": {"optim"},
    "state": {"optim"},
    "config_checks": {"optim", "schedule"},
    "resume_policy": {"optim", "schedule"},
    "records": {"processes"},
    # 3: what a run keeps on disk
    "checkpoints": {"processes", "records", "resume_policy", "steps"},
    # 4: a run built and restored; one epoch's steps
    "run": {"checkpoints", "config_checks", "optim", "processes", "records", "resume_policy",
            "schedule", "state"},
    "stepping": {"checkpoints", "processes", "records", "steps"},
    # 5: the evaluations
    "evaluation": {"checkpoints", "records", "run", "steps"},
    # 6: the loop
    "train": {"checkpoints", "evaluation", "processes", "records", "resume_policy", "run",
              "stepping"},
}
TRAINING_SUBPACKAGES = {"checkpoints", "processes", "records"}


def absolute_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, relative imports resolved against `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[:len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(path: Path, package: str | None = None) -> set[str]:
    """Every name a module imports (anywhere in it, late imports and relative imports included),
    written out in full (`from a.b import c` -> a.b.c); `package` is the module's package (by
    default, from its path)."""
    if package is None:
        package = ".".join(("alexnet_jax",) + path.relative_to(PACKAGE).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = absolute_module(node, package)
            names.update(f"{module}.{alias.name}" if module else alias.name
                         for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def project_imports(path: Path, package: str | None = None) -> set[str]:
    """The parts of alexnet_jax a module imports."""
    return {name.split(".")[1] for name in imported_names(path, package)
            if name.startswith("alexnet_jax.")}


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


def training_room(path: Path) -> str:
    """The room of training/ a module is in: its subpackage, or itself at the top level."""
    relative = path.relative_to(TRAINING)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def training_rooms_imported(path: Path) -> set[str]:
    return {name.split(".")[2] for name in imported_names(path)
            if name.startswith("alexnet_jax.training.")}


@pytest.mark.parametrize("path", sorted(TRAINING.rglob("*.py")), ids=lambda p: str(
    p.relative_to(TRAINING)))
def test_the_rooms_of_training_import_only_rooms_below_them(path):
    if path == TRAINING / "__init__.py":
        return
    room = training_room(path)
    assert room in TRAINING_ALLOWED, f"training/{room} has no floor in TRAINING_ALLOWED"
    reaching = training_rooms_imported(path) - TRAINING_ALLOWED[room] - {room}
    assert not reaching, (f"training/{path.relative_to(TRAINING)} ({room}) imports "
                          f"{sorted(reaching)}")


def floors(allowed: dict[str, set[str]]) -> list[set[str]]:
    """The rooms floor by floor, each on the floor above the highest it imports; a cycle, which
    has no floors, is an AssertionError that names its rooms."""
    floor_of: dict[str, int] = {}
    while len(floor_of) < len(allowed):
        ready = {room: 1 + max((floor_of[other] for other in imported), default=0)
                 for room, imported in allowed.items()
                 if room not in floor_of and imported <= set(floor_of)}
        assert ready, f"a cycle among {sorted(set(allowed) - set(floor_of))}"
        floor_of.update(ready)
    return [{room for room, floor in floor_of.items() if floor == level}
            for level in range(1, max(floor_of.values(), default=0) + 1)]


def test_the_rooms_of_training_stand_on_floors():
    assert len(floors(TRAINING_ALLOWED)) == 6   # docs/architecture.md draws them
    assert set(TRAINING_ALLOWED) == {training_room(path) for path in TRAINING.rglob("*.py")
                                     if path != TRAINING / "__init__.py"}
    with pytest.raises(AssertionError, match="a cycle among"):
        floors({**TRAINING_ALLOWED, "processes": {"records"}})


def test_training_holds_at_most_14_modules_at_its_top_level_and_its_rooms_below():
    modules = sorted(p.name for p in TRAINING.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 14, modules
    rooms = {p.name for p in TRAINING.iterdir() if (p / "__init__.py").exists()}
    assert rooms == TRAINING_SUBPACKAGES
    for room in rooms:   # each says what it holds
        assert ast.get_docstring(ast.parse((TRAINING / room / "__init__.py").read_text()))


def module_file(name: str) -> Path | None:
    """The file of the module of alexnet_jax that an imported name lives in (None: not one)."""
    parts = name.split(".")
    while parts:
        path = PACKAGE.parent.joinpath(*parts)
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
        parts.pop()
    return None


def test_no_two_modules_of_training_import_each_other_through_any_chain():
    graph = {path: {module_file(name) for name in imported_names(path)} - {None, path}
             for path in TRAINING.rglob("*.py")}
    state: dict[Path, str] = {}

    def visit(path: Path, chain: list[Path]) -> None:
        state[path] = "open"
        for other in sorted(graph.get(path, ())):
            if state.get(other) == "open":
                cycle = chain[chain.index(other):] + [other] if other in chain else [other]
                pytest.fail("an import cycle: " + " -> ".join(
                    str(p.relative_to(PACKAGE)) for p in cycle))
            if other in graph and other not in state:
                visit(other, chain + [other])
        state[path] = "done"

    for path in sorted(graph):
        if path not in state:
            visit(path, [path])
