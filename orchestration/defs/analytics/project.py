"""The dbt project as Dagster sees it, with a manifest that is always current.

``@dbt_assets`` needs ``target/manifest.json`` when the code location loads. It is a build
output (not committed), so on a fresh clone, or after a model changed, it is rebuilt here with
``dbt parse`` run by the project environment's own ``dbt`` (never one found on PATH). A file
lock keeps two processes (the webserver's code server and a run worker) from parsing at once.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from dagster_dbt import DbtProject

from orchestration.resources import DBT_PROJECT_DIR, dbt_executable

DBT_SOURCES = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests")
"""What the manifest is parsed from: a change to any of them means a re-parse."""

PARSE_TIMEOUT_S = 300

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _newest_source_mtime(project_dir: Path) -> float:
    newest = 0.0
    for name in DBT_SOURCES:
        path = project_dir / name
        files = [path] if path.is_file() else list(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if file.is_file():
                newest = max(newest, file.stat().st_mtime)
    return newest


def manifest_is_current(project: DbtProject) -> bool:
    manifest = Path(project.manifest_path)
    return manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(
        Path(project.project_dir)
    )


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Parse the project when its manifest is missing or older than its sources."""
    manifest = Path(project.manifest_path)
    if manifest_is_current(project):
        return manifest
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest.parent / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if manifest_is_current(project):
            return manifest
        result = subprocess.run(
            [dbt_executable(), "parse", "--quiet", "--profiles-dir", str(project.profiles_dir)],
            cwd=project.project_dir,
            capture_output=True,
            text=True,
            timeout=PARSE_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`dbt parse` failed in {project.project_dir} (exit {result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
    return manifest
