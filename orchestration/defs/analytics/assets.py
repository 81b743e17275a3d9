"""The analysts' dbt models as assets, downstream of the lake tables they read.

dbt sources are named like the lake (``silver.audio_events`` ...), so the default translation
of a source to ``AssetKey([source, table])`` is exactly the lake table's key: the dbt models
hang below the sidecar's observed tables and the monitoring tables in one graph. dbt tests
become asset checks on the models. A source table nothing has written yet (a lake that never
had a dead letter or a drift report) reads as empty with its spec's columns: the dbt project's
lake plugin handles it, so no asset creates tables that other writers own.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from orchestration.defs.analytics.invocation import dbt_vars
from orchestration.defs.analytics.project import dbt_project
from orchestration.resources import LakeResource, PlatformPaths

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


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=SonolakeDbtTranslator(),
    pool="analytics_duckdb",
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
)
def analytics_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, lake: LakeResource, paths: PlatformPaths
):
    """``dbt build``: staging views, marts tables and every dbt test, over the current lake."""
    yield from dbt.cli(["build", "--vars", dbt_vars(lake, paths)], context=context).stream()
