"""The Dagster instance on one machine: SQLite storage under ``Settings.dagster_home``.

``make dev`` (through ``python -m orchestration``) and ``sonolake demo`` call
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


def prepare_dagster_home(settings: Settings) -> Path:
    """Create the Dagster home and its dagster.yaml (kept if it already exists); return it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home
