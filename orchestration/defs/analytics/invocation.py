"""What one dbt invocation gets: where the lake is, where the analytics database goes.

``--vars`` carries the lake root, the analytics database and the S3 lake's non-secret storage
options (region, endpoint). Credentials never go on the command line nor into
``os.environ``: the dbt subprocess inherits the ``SONOLAKE_AWS_*`` variables the Dagster
process already has (the S3 resource's ``EnvVar`` references name them), and ``profiles.yml``
hands them to the lake plugin (``dbt/plugins/lake_delta.py``), which gives them to delta-rs.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from orchestration.defs.analytics.project import dbt_project, dbt_target_lock
from orchestration.resources import LakeResource, PlatformPaths

ANALYTICS_DATABASE = "analytics.duckdb"
"""The DuckDB file dbt builds (under the state dir); not the lake's catalog.duckdb."""
SECRET_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def analytics_database(paths: PlatformPaths) -> Path:
    return paths.work_dir() / ANALYTICS_DATABASE


def dbt_vars(lake: LakeResource, paths: PlatformPaths) -> str:
    """``--vars`` (JSON) for one invocation over the environment's lake."""
    options = {k: v for k, v in lake.storage_options().items() if k not in SECRET_OPTIONS}
    return json.dumps(
        {
            "lake_root": lake.root,
            "analytics_database": str(analytics_database(paths)),
            "storage_options": options,
        }
    )


def generate_dbt_docs(defs: dg.Definitions) -> bool:
    """``dbt docs generate`` over the code location's lake, into ``dbt/target`` (where ``dbt
    docs serve`` looks). Returns whether it succeeded; dbt's log is ``dbt/target/dbt.log``."""
    resources = defs.resources or {}
    needed = {name: resources[name] for name in ("lake", "paths", "dbt")}
    with dg.build_resources(needed) as built, dbt_target_lock():  # EnvVar secrets resolved here
        invocation = built.dbt.cli(
            ["docs", "generate", "--quiet", "--vars", dbt_vars(built.lake, built.paths)],
            raise_on_error=False,
            target_path=Path(dbt_project.manifest_path).parent,
        )
        invocation.wait()
        return invocation.is_successful()
