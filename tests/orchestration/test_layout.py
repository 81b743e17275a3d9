"""``orchestration/`` holds Dagster code only: every module is a Dagster module.

A module that imports neither ``dagster`` nor a ``dagster_*`` integration is domain logic in the
wrong package (move it to ``models``, ``features``, ``lake_schemas`` or ``streaming``), unless it
is one of the few that only describe the Dagster side (named below, with why).
"""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO_ROOT

PACKAGE = REPO_ROOT / "orchestration"
NOT_IMPORTING_DAGSTER = {
    "instance.py": "writes the Dagster instance's dagster.yaml (text, before Dagster starts)",
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def _is_package_marker(path: Path) -> bool:
    """An ``__init__`` with a docstring and re-exports of its own package only."""
    roots = _imported_roots(path)
    return path.name == "__init__.py" and roots <= {"orchestration", "__future__"}


def test_every_orchestration_module_is_dagster_code() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if _is_package_marker(path) or relative in NOT_IMPORTING_DAGSTER:
            continue
        roots = _imported_roots(path)
        if not any(root == "dagster" or root.startswith("dagster_") for root in roots):
            offenders.append(relative)
    assert not offenders, f"modules in orchestration/ that are not Dagster code: {offenders}"


def test_no_orchestration_module_changes_the_process_environment() -> None:
    """A build must not mutate ``os.environ`` (two runs in one process would see each other's
    credentials)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.func if isinstance(node, ast.Call) else node
            text = ast.unparse(target)
            if text.startswith(
                ("os.environ.update", "os.environ.pop", "os.environ.setdefault")
            ) or (
                isinstance(node, ast.Assign)
                and any("os.environ[" in ast.unparse(t) for t in node.targets)
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
