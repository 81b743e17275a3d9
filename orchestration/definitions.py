"""The Sonolake code location: the per-domain definitions plus the environment's resources.

Everything under ``orchestration/defs/`` (ingestion, features, training, monitoring,
analytics, maintenance) is discovered by ``load_from_defs_folder``; this file only adds what
is global: the resources for the environment ``Settings.environment`` names (local lake or S3
lake), the executor ``Settings.dagster_executor`` names (orchestration/executors.py), and the
sensor that evaluates the assets' automation conditions.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.executors import executor_for
from orchestration.resources import resources_for
from sonolake.settings import Settings, get_settings

AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "sonolake_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Evaluates every asset's AutomationCondition once a minute.",
)


def build_definitions(settings: Settings) -> dg.Definitions:
    """The whole code location for ``settings`` (tests build it for isolated settings)."""
    domains = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(
        domains,
        dg.Definitions(
            sensors=[AUTOMATION_SENSOR],
            resources=resources_for(settings),
            executor=executor_for(settings),
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())
