"""The package's layout keeps its promises: no import cycles, plain data stays plain, rooms flow one way.

Read statically from the source (every `import`, at module level or inside a function), so a lazy
import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "csulora_cli"
# What the request/result types may pull in: the standard library, torch, and the package's own math.
HEAVY = {"huggingface_hub", "safetensors", "rich", "typer", "click", "yaml", "httpx", "numpy"}
# A room may import an earlier one, never a later one. Data moves checkpoints -> subspace -> correction
# -> adapters -> report, but an adapter's *reading* comes first (targets map its modules to base keys),
# so `adapters` stands before `subspace` here; its writer needs nothing of the math either.
ROOMS = ("checkpoints", "adapters", "subspace", "correction", "report", "pipeline", "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level third-party packages) that `path` imports anywhere."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    own, other = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (own if alias.name.startswith("csulora_cli") else other).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("csulora_cli"):
                other.add(target)
                continue
            for alias in node.names:  # `from . import linalg` imports a module; `from .x import y`, module x
                candidate = f"{target}.{alias.name}"
                own.add(candidate if candidate in MODULES else target)
    return {module for module in own if module in MODULES}, {module.split(".")[0] for module in other}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path)[0] for name, path in MODULES.items()}


def parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_no_import_cycles():
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append(visiting[visiting.index(name) :] + [name])
            return
        visiting.append(name)
        for target in sorted(GRAPH[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_package_init_files_import_nothing_heavy():
    """Importing csulora_cli.x.y runs every __init__ above it: they must stay docstrings and light re-exports."""
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name not in ("csulora_cli.cli", "csulora_cli.correction.methods"):
            assert not imports_of(path)[1] - {"__future__"}, f"{name} imports {imports_of(path)[1]}"


def test_request_and_result_types_import_nothing_that_does_io():
    reachable, pending = set(), ["csulora_cli.pipeline.types"]
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        reachable.add(name)
        pending.extend(GRAPH[name])
        pending.extend(parent for parent in parents(name) if parent in MODULES)
    heavy = {name: imports_of(MODULES[name])[1] & HEAVY for name in reachable}
    assert not any(heavy.values()), {name: found for name, found in heavy.items() if found}


def test_rooms_import_only_earlier_rooms():
    def room(name: str) -> str | None:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None

    backwards = []
    for name, targets in GRAPH.items():
        for target in targets:
            source_room, target_room = room(name), room(target)
            if source_room and target_room and ROOMS.index(target_room) > ROOMS.index(source_room):
                backwards.append(f"{name} -> {target}")
    assert not backwards, backwards
