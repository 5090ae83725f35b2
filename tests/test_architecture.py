"""The package's shape: packages import in one direction, imports inside functions included.

Each package or top-level module sits in a layer; it may import from its own
package and from lower layers only, so there is no cycle between packages, and a
board that runs workers never loads what sits above the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "shardguard"

# lowest first; DESIGN.md's parts, with the foundations they share below them
LAYERS: list[set[str]] = [
    {"errors"},
    {"_config", "_progress", "protections"},  # foundations
    {"data", "graph", "platform"},
    {"zoo", "_paths"},
    {"partition"},
    {"protocol", "hooks"},  # the wire and control messages; the hooks of both executors
    {"local"},  # the local executor
    {"defences", "threats"},
    {"runtime"},  # workers and the coordinator
    {"analysis"},
    {"demo"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(parts: list[str]) -> str:
    """The package (or top-level module) a dotted path inside shardguard belongs to."""
    return parts[0]


def imports() -> list[tuple[str, str, str]]:
    """(importing unit, imported unit, where) for every import of shardguard, anywhere in a
    file: at the top, inside functions, under TYPE_CHECKING. ``where`` is ``path:line``,
    with `` (in a function)`` for an import inside one."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        me = _unit(parts)
        tree = ast.parse(path.read_text())
        functions = [f for f in ast.walk(tree)
                     if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
        nested = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            targets: list[list[str]] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts[:-node.level]
                    module = base + (node.module.split(".") if node.module else [])
                elif (node.module or "").split(".")[0] == "shardguard":
                    module = node.module.split(".")[1:]  # type: ignore[union-attr]
                else:
                    continue
                targets = [module] if module else [[a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1:] for a in node.names
                           if a.name.startswith("shardguard.")]
            for target in targets:
                unit = _unit(target) if target else ""
                if unit and unit != "__version__" and unit != me:
                    inside = " (in a function)" if id(node) in nested else ""
                    found.append((me, unit, f"{path.relative_to(ROOT)}:{node.lineno}{inside}"))
    return found


def test_every_package_and_module_has_a_layer():
    units = {_unit(list(p.relative_to(ROOT).with_suffix("").parts)) for p in ROOT.rglob("*.py")}
    assert units - LAYER.keys() == set(), "give each new package a place in LAYERS"


def test_packages_import_only_from_lower_layers_counting_imports_inside_functions():
    upward = [f"{where}: {me} imports {unit}" for me, unit, where in imports()
              if LAYER[unit] >= LAYER[me]]
    assert upward == []


def test_the_check_sees_imports_inside_functions():
    inside = [w for _, _, w in imports() if w.endswith("(in a function)")]
    assert any(w.startswith("cli/") for w in inside)  # commands import what they run lazily


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_every_source_file_fits_in_one_read():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}, f"over {MAX_FILE_LINES} lines: split by concept"


def test_every_function_fits_on_a_screen():
    long = {}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert long == {}, f"over {MAX_FUNCTION_LINES} lines (def to last line)"


def test_the_worker_names_no_defence_or_threat():
    """The worker moves, routes and collects messages; what defends or attacks them are hooks."""
    classes = {node.name for package in ("defences", "threats")
               for path in (ROOT / package).glob("*.py")
               for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}
    worker = ast.parse((ROOT / "runtime" / "worker.py").read_text())
    used = {n.id for n in ast.walk(worker) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(worker) if isinstance(n, ast.Attribute)}
    assert used & classes == set()
    assert not [where for _, unit, where in imports()
                if where.startswith("runtime/worker.py") and unit in ("defences", "threats")]
