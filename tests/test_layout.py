"""The package's architecture, checked: the layers import only downwards (import-linter), no module
shadows the standard library, nothing outside tasks/ knows a task or a metric by name, and the
command line answers --help and --version without importing torch."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prompttune.tasks import TASKS

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code

PACKAGE = Path(__file__).resolve().parent.parent / "prompttune"


def test_the_layers_import_only_downwards():
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter, "import-linter is part of the test extra"
    result = subprocess.run(
        [linter, "--config", str(PACKAGE.parent / "pyproject.toml")], capture_output=True, text=True, cwd=PACKAGE.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
    assert not (names & set(sys.stdlib_module_names)), names & set(sys.stdlib_module_names)


def _constants(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for item in node.elts:
            yield from _constants(item)


def test_nothing_outside_tasks_compares_a_task_or_metric_name():
    """Nor the name of what serves a task: the server, mixed batches and the API compare a task's
    `endpoint` with `Endpoint`'s members, never with a string."""
    from prompttune.options import Endpoint

    known = set(TASKS) | {metric for cls in TASKS.values() for metric in cls.metrics} | {e.value for e in Endpoint}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    found += [
                        f"{path.relative_to(PACKAGE)}:{node.lineno}: {c!r}" for c in _constants(side) if c in known
                    ]
    assert not found, found


def _task_attributes_used_outside_tasks() -> dict[str, list[str]]:
    """Every attribute read on a task outside tasks/: on `x.task`, a variable named `task` or
    `task_cls`, or `task_class(...)`, with where."""

    def is_task(node) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "task"
            or isinstance(node, ast.Name)
            and node.id in ("task", "task_cls")
            or isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "task_class"
        )

    used = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and is_task(node.value):
                used.setdefault(node.attr, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return used


def test_what_code_outside_tasks_asks_of_a_task_is_declared_on_the_base():
    """The task contract is explicit: every method or attribute read on a task outside tasks/ is
    declared on `Task` (with a docstring, for methods of its own) or comes from torch's Module."""
    from torch import nn

    from prompttune.tasks.base import Task

    used = _task_attributes_used_outside_tasks()
    assert {"encode", "collate", "loss", "generate_texts", "endpoint"} <= set(used)  # the scan finds the calls
    declared = {name for cls in Task.__mro__ for name in getattr(cls, "__annotations__", {})}
    undeclared = {name: where for name, where in used.items() if not hasattr(Task, name) and name not in declared}
    assert not undeclared, f"read on a task outside tasks/ but not declared on Task: {undeclared}"
    undocumented = [
        name
        for name in used
        if callable(getattr(Task, name, None))
        and not hasattr(nn.Module, name)
        and not (getattr(Task, name).__doc__ or "").strip()
    ]
    assert not undocumented, f"Task methods without a docstring: {undocumented}"


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\nfrom prompttune.cli import main\n"
        "for argv in (['--help'], ['--version'], ['train', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: prompttune" in result.stdout and "prompttune 0.1.0" in result.stdout
    assert result.stdout.strip().endswith("TORCH False")
