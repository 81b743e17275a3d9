"""The asset graph, run in process on the demo's Dagster instance.

Runs go through the real definitions, resources and instance (``Settings.dagster_home``), so
every materialization, check result and run the demo makes is in the UI afterwards
(``make dev``). The drift sensor is evaluated the way the daemon does it, tick by tick with its
cursor, and the run it requests is executed with the request's tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import dagster as dg

from lake_schemas import AUDIO_EVENTS, Lake
from orchestration.definitions import build_definitions
from orchestration.defs.monitoring.sensors import drift_retraining_sensor
from sonolake.settings import Settings

QUIET_LOGS: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps Dagster's step-by-step log off the demo's terminal (it is in the UI)."""


def candidate_config(*, epochs: int | None, light_timing: bool = True) -> dict[str, Any]:
    """Run config of the retrain job: the training knobs of ``candidate_model``."""
    config: dict[str, Any] = {"light_timing": light_timing}
    if epochs is not None:
        config["epochs"] = epochs
    return {"ops": {"training__candidate_model": {"config": config}}}


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    """Metadata values of the last materialization of ``key`` in a run ({} if none)."""
    found: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key == dg.AssetKey.from_user_string(key):
            found = {k: v.value for k, v in event.materialization.metadata.items()}
    return found


class DemoGraph:
    """The code location for the demo's settings, bound to one instance."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.defs = build_definitions(settings)
        self.sensor_cursor: str | None = None

    def materialize(
        self,
        keys: Iterable[str],
        *,
        partition_key: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        selection = {dg.AssetKey.from_user_string(k) for k in keys}
        job = self.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection=selection
        )
        return job.execute_in_process(
            instance=self.instance,
            partition_key=partition_key,
            run_config={**QUIET_LOGS, **(run_config or {})},
            tags={"sonolake/trigger": "demo", **(tags or {})},
            raise_on_error=False,
        )

    def run_job(
        self, name: str, *, run_config: Mapping[str, Any], tags: Mapping[str, str]
    ) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def(name).execute_in_process(
            instance=self.instance,
            run_config=dict(run_config),
            tags=dict(tags),
            raise_on_error=False,
        )

    def event_dates(self) -> list[str]:
        lake = Lake(
            self.settings.lake_root,
            self.settings.storage_options() or None,
            self.settings.catalog_file,
        )
        if not lake.exists(AUDIO_EVENTS):
            return []
        days: set[date] = set(lake.read(AUDIO_EVENTS, columns=["event_date"]).column(0).to_pylist())
        return sorted(d.isoformat() for d in days)

    def features(self) -> list[dg.ExecuteInProcessResult]:
        """gold.audio_features for every event date in the lake (idempotent)."""
        return [
            self.materialize(["gold/audio_features"], partition_key=day)
            for day in self.event_dates()
        ]

    def resource(self, name: str) -> Any:
        """One of the code location's resources (as the environment chose it)."""
        return (self.defs.resources or {})[name]

    def sensor_tick(self) -> dg.SensorResult | dg.SkipReason:
        """One evaluation of the drift sensor, carrying its cursor like the daemon does."""
        lake = self.resource("lake")
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.sensor_cursor, resources={"lake": lake}
        ) as context:
            result = drift_retraining_sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            self.sensor_cursor = result.cursor
        return result  # type: ignore[return-value]
