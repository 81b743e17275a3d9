"""The analysts' dbt models as assets, downstream of the lake tables they read.

dbt sources are named like the lake (``silver.audio_events`` ...), so the default translation
of a source to ``AssetKey([source, table])`` is exactly the lake table's key: the dbt models
hang below the sidecar's observed tables and the monitoring tables in one graph. dbt tests
become asset checks on the models. ``dbt build`` gets the environment's lake root and the
analytics database through ``--vars``; credentials of an S3 lake reach delta-rs as the standard
AWS_* environment variables, never on the command line.
"""

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from lake_schemas.tables import TABLES
from orchestration.defs.analytics.project import dbt_project, ensure_manifest
from orchestration.resources import LakeResource, PlatformPaths

ANALYTICS_DATABASE = "analytics.duckdb"
"""The DuckDB file dbt builds (under the state dir); not the lake's catalog.duckdb."""

DBT_SOURCE_TABLES = (
    "bronze.audio_chunks",
    "bronze.dead_letters",
    "silver.audio_events",
    "silver.sessions",
    "monitoring.model_evaluations",
    "monitoring.drift_reports",
)
"""The lake tables dbt/models/sources.yml reads."""

SECRET_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

HOURLY_AFTER_NEW_DATA = dg.AutomationCondition.on_cron("0 * * * *").with_label(
    "hourly, once upstream lake tables have new data"
)


class SonolakeDbtTranslator(DagsterDbtTranslator):
    """dbt models under ``analytics/<model>`` in the ``analytics`` group, built hourly."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: Any
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        resource_type = unique_id.split(".", 1)[0]
        if resource_type != "model":
            return spec
        node = manifest["nodes"][unique_id]
        return spec.replace_attributes(
            key=dg.AssetKey(["analytics", node["name"]]),
            group_name="analytics",
            automation_condition=HOURLY_AFTER_NEW_DATA,
        ).merge_attributes(kinds={"duckdb"}, tags={"layer": node["config"].get("schema") or ""})


def dbt_vars(lake: LakeResource, paths: PlatformPaths) -> dict[str, Any]:
    """``--vars`` for one build: where the lake is, where the analytics database goes."""
    options = {k: v for k, v in lake.storage_options().items() if k not in SECRET_OPTIONS}
    return {
        "lake_root": lake.root,
        "analytics_database": str(paths.work_dir() / ANALYTICS_DATABASE),
        "storage_options": options,
    }


@contextlib.contextmanager
def aws_credentials_env(lake: LakeResource) -> Iterator[None]:
    """Expose an S3 lake's credentials to the dbt subprocess as AWS_* variables, then restore."""
    secrets = {k: v for k, v in lake.storage_options().items() if k in SECRET_OPTIONS}
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dbt_assets(
    manifest=ensure_manifest(dbt_project),
    project=dbt_project,
    dagster_dbt_translator=SonolakeDbtTranslator(),
    pool="analytics_duckdb",
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
)
def analytics_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource, paths: PlatformPaths
):
    """``dbt build``: staging views, marts tables and every dbt test, over the current lake."""
    opened = lake.open()
    for name in DBT_SOURCE_TABLES:
        # a source table nothing has written yet reads as empty instead of failing the build
        if not opened.exists(TABLES[name]):
            opened.ensure(TABLES[name], writer="dagster:analytics")
    variables = json.dumps(dbt_vars(lake, paths))
    with aws_credentials_env(lake):
        yield from dbt.cli(["build", "--vars", variables], context=context).stream()
