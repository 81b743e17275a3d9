"""The dbt project as Dagster sees it, prepared the dagster-dbt way.

``@dbt_assets`` reads ``target/manifest.json`` when the code location loads. Under ``dagster
dev`` / ``dg dev`` (``DAGSTER_IS_DEV_CLI``), :meth:`DbtProject.prepare_if_dev` re-parses the
project at every load, so an edited model shows up at once. Everywhere else the manifest is a
build step, as in a deployment: ``dagster-dbt project prepare-and-package --file
orchestration/defs/analytics/project.py``, or :func:`prepare_dbt_project` (what the demo and the
test suite call before they load the definitions).
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt"


def dbt_executable() -> str:
    """The ``dbt`` of the interpreter running Dagster (the project's .venv), not one on PATH."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()  # `make dev` puts this environment's dbt first on PATH


@contextmanager
def dbt_target_lock() -> Iterator[None]:
    """Hold the project's ``target/`` for one writer at a time. ``dbt parse`` and ``dbt docs
    generate`` rewrite ``manifest.json`` and ``partial_parse.msgpack`` in place, so two processes
    preparing the same checkout at once (the demo beside ``make dev``, parallel test workers)
    could otherwise leave a torn manifest that the next code-location load cannot read."""
    target = Path(dbt_project.project_dir) / dbt_project.target_path  # relative to the project
    target.mkdir(parents=True, exist_ok=True)
    with (target / ".write.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_dbt_project() -> Path:
    """Parse the dbt project now with this environment's dbt (``dbt parse``; partial parsing
    makes a re-run cheap); returns the manifest the code location will load."""
    dbt = DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
    with dbt_target_lock():
        dbt.cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()
    return Path(dbt_project.manifest_path)
