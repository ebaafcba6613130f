"""The package's layout keeps its promises: no import cycles, plain data stays plain, rooms flow one way.

Read statically from the source (every `import`, at module level or inside a function), so a lazy
import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "csulora_cli"
# What the request and result types must not pull in: plain data imports no numerical core and no I/O library.
HEAVY = {"torch", "huggingface_hub", "safetensors", "rich", "typer", "click", "yaml", "httpx", "numpy"}
# A room may import an earlier one, never a later one. Data moves checkpoints -> subspace -> correction
# -> adapters -> report, but an adapter's *reading* comes first (targets map its modules to base keys),
# so `adapters` stands before `subspace` here; its writer needs nothing of the math either. `inference`
# (running a model) knows nothing of subspaces; `probe` (refusal margins) reads what a model offers
# without importing the room that runs it.
ROOMS = ("checkpoints", "adapters", "inference", "subspace", "correction", "probe", "report", "pipeline", "cli")
# The optional dependencies of running a model: only `inference/` imports them.
MODEL_RUNTIME = {"transformers", "peft", "tokenizers", "accelerate"}


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


def test_the_method_registry_imports_no_method():
    """`--method`, `--help` and the request check read the registry: it imports a method's module (and with
    it torch) only when `get_method` is called, never at module level."""
    own, other = imports_of(MODULES["csulora_cli.correction.methods"])
    assert not other & HEAVY and own <= {"csulora_cli.errors"}, (own, other)


def test_request_and_result_types_import_nothing_heavy():
    reachable, pending = set(), [f"csulora_cli.pipeline.types.{name}" for name in ("requests", "results", "probe")]
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        reachable.add(name)
        pending.extend(GRAPH[name])
        pending.extend(parent for parent in parents(name) if parent in MODULES)
    heavy = {name: imports_of(MODULES[name])[1] & HEAVY for name in reachable}
    assert not any(heavy.values()), {name: found for name, found in heavy.items() if found}


def module_level_imports(path: Path) -> set[str]:
    """The package modules `path` imports when it is imported: statements at the top level, not in functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    statements = list(ast.parse(path.read_text()).body)
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.If, ast.Try)):  # `try: import x` and `if TYPE_CHECKING:` still run at import
            statements.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            statements.extend(item for handler in getattr(node, "handlers", []) for item in handler.body)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return found


def test_only_the_inference_room_imports_transformers_and_peft_and_it_is_imported_lazily():
    """Weight-only commands never need the `probe` extra: transformers and peft are imported by `inference/`
    alone, and `inference/` (but its plain `params`) only inside the probe command's function, never at
    module level, so importing the API or building a request loads neither."""
    outside = {
        name: imports_of(path)[1] & MODEL_RUNTIME
        for name, path in MODULES.items()
        if not name.startswith("csulora_cli.inference")
    }
    assert not any(outside.values()), {name: found for name, found in outside.items() if found}
    plain = {"csulora_cli.inference", "csulora_cli.inference.params"}
    eager = {
        name: sorted(target for target in module_level_imports(path) if target.startswith("csulora_cli.inference"))
        for name, path in MODULES.items()
        if not name.startswith("csulora_cli.inference")
    }
    assert {name: found for name, found in eager.items() if set(found) - plain} == {}
    lazy = {name for name, targets in GRAPH.items() if not name.startswith("csulora_cli.inference")}
    lazy = {name for name in lazy if any(t.startswith("csulora_cli.inference") and t not in plain for t in GRAPH[name])}
    # The probe and the activation subspace run the model; both import inference/ inside their functions.
    assert lazy == {"csulora_cli.pipeline.commands.probe", "csulora_cli.pipeline.commands.activations"}


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


# Inside `pipeline/`, three kinds of module, each importing only the kinds before it: the plain types, the
# plumbing the commands share, the commands. A file directly in `pipeline/` other than its `__init__` is
# one of none of them.
PIPELINE_KINDS = ("types", "plumbing", "commands")


def test_pipeline_is_split_by_kind_and_kinds_import_only_earlier_ones():
    def kind(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if len(parts) > 3 and parts[1] == "pipeline" else None

    loose = [
        name
        for name, path in MODULES.items()
        if name.count(".") == 2 and name.startswith("csulora_cli.pipeline.") and path.name != "__init__.py"
    ]
    assert not loose, f"put each in pipeline/{{{','.join(PIPELINE_KINDS)}}}/: {loose}"
    assert {kind(name) for name in MODULES} - {None} == set(PIPELINE_KINDS)
    backwards = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if kind(name) and kind(target) and PIPELINE_KINDS.index(kind(target)) > PIPELINE_KINDS.index(kind(name))
    ]
    assert not backwards, backwards


# A flag as the command line spells it, inside a string: `--rank`, `--fail-above`.
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# Model cards are documentation a reader runs commands from: they show command lines, flags included.
SHOWS_COMMAND_LINES = {"csulora_cli.report.card", "csulora_cli.report.subspace_card"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_library_messages_name_parameters_not_flags():
    """Outside cli/, a message names a parameter as `{name}` (or `parameter=`); only the CLI spells flags."""
    spelled = []
    for name, path in MODULES.items():
        if name.startswith("csulora_cli.cli") or name in SHOWS_COMMAND_LINES:
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                spelled += [f"{name}:{node.lineno}: {flag}" for flag in FLAG.findall(node.value)]
    assert not spelled, spelled


# Where files may be written directly: the helper itself, and the fixture builders (into folders the caller
# made for them: a test's tmp_path, the demo's own temporary folder).
WRITES_DIRECTLY = {"csulora_cli.atomic", "csulora_cli.testing.builders"}
DIRECT_WRITES = {"write_text", "write_bytes", "save_file", "mkstemp", "NamedTemporaryFile", "replace", "rename"}


def test_files_are_written_only_through_the_atomic_helper():
    direct = []
    for name, path in MODULES.items():
        if name in WRITES_DIRECTLY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            writes_mode = (
                called == "open"
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and any(mode in str(node.args[1].value) for mode in "wax")
            )
            # `str.replace` shares its name with `os.replace`: only calls on `os` or a Path-like count.
            if called in ("replace", "rename") and not (
                isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "os"
            ):
                continue
            if called in DIRECT_WRITES or writes_mode:
                direct.append(f"{name}:{node.lineno}: {called}")
    assert not direct, direct


SCRIPTS = PACKAGE.parent / "scripts"


def _script_imports(path: Path) -> set[str]:
    """Every module a script imports, by absolute name (relative imports resolved within `scripts`)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
    return found


def test_scripts_are_modules_that_never_import_tests_nor_edit_the_path():
    """scripts/ runs as `python -m scripts.<kind>.<name>`: importable as it is, and tests may import it, so
    the dependency between the two folders points one way."""
    problems = []
    for path in sorted(SCRIPTS.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        for folder in path.relative_to(SCRIPTS).parents:
            if not (SCRIPTS / folder / "__init__.py").is_file():
                problems.append(f"{SCRIPTS.name / folder} has no __init__.py")
        imported = _script_imports(path)
        problems += [f"{relative} imports {name}" for name in imported if name.split(".")[0] == "tests"]
        if "sys.path" in path.read_text():
            problems.append(f"{relative} edits sys.path")
    assert not problems, sorted(set(problems))


def test_scripts_reach_the_package_only_through_modules_that_exist():
    """A script importing a package module that a refactor moved fails here, not in a benchmark run."""
    missing = []
    for path in sorted(SCRIPTS.rglob("*.py")):
        for name in _script_imports(path):
            if name.startswith("csulora_cli") and name not in MODULES:
                missing.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not missing, missing


def test_shell_scripts_change_to_the_repository_root():
    """A shell script that moves to another folder of scripts/ still starts from the repository root:
    `cd "$(dirname "$0")/<up>"` must climb exactly as many folders as the script sits deep."""
    root = PACKAGE.parent
    wrong = []
    for path in sorted([*SCRIPTS.rglob("*.sh"), root / ".ci" / "run"]):
        for up in re.findall(r'cd "\$\(dirname "\$0"\)/([./]+)"', path.read_text()):
            if (path.parent / up).resolve() != root:
                wrong.append(f"{path.relative_to(root)} changes to {up!r} from its folder, not to the root")
    assert not wrong, wrong
