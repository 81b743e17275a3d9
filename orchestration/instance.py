"""The Dagster instance: SQLite storage under ``Settings.dagster_home`` on one machine, Postgres
in the ``postgres`` environment (:data:`POSTGRES_STORAGE_YAML`).

``make dev`` (through ``sonolake dagster-home``) and ``sonolake demo`` call
:func:`prepare_dagster_home` before starting Dagster,
so the UI, the daemon and in-process runs share one instance (run history, asset
materializations, check results, sensor cursors). ``dagster.yaml`` also turns on the
freshness policies (off by default in open-source Dagster) and gives every concurrency pool a
limit of one, which is how the lake's one-writer-per-table rule holds inside Dagster.
"""

from __future__ import annotations

from pathlib import Path

from sonolake.settings import Settings

DAGSTER_YAML = """\
# Written by orchestration/instance.py; storage defaults to SQLite files in this folder.
telemetry:
  enabled: false
freshness:
  enabled: true
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 2
"""
"""Two runs at a time on a 2-core machine; pools serialize the writers of each table."""


POSTGRES_STORAGE_YAML = """\
# The postgres environment: runs, event logs and schedules in Postgres (dagster-postgres), so
# several machines (webserver, daemon, run workers) share one instance.
storage:
  postgres:
    postgres_url:
      env: SONOLAKE_DAGSTER_POSTGRES_URL
"""
"""The URL is read from the environment by Dagster itself, never written into the file."""


def dagster_yaml(settings: Settings) -> str:
    """The instance configuration of the settings' environment."""
    if settings.environment == "postgres":
        return DAGSTER_YAML + POSTGRES_STORAGE_YAML
    return DAGSTER_YAML


def prepare_dagster_home(settings: Settings) -> Path:
    """Create the Dagster home and its dagster.yaml (kept if it already exists); return it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(dagster_yaml(settings))
    return home
