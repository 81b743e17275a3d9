"""The asset graph, run in process on the demo's Dagster instance.

Runs go through the real definitions, resources and instance (``Settings.dagster_home``), so
every materialization, check result and run the demo makes is in the UI afterwards
(``make dev``). The drift sensor is evaluated the way the daemon does it, tick by tick with its
cursor, and the run it requests is executed with the request's tags.

Runs execute on a worker thread while the main thread waits in short joins. In the main thread
Dagster's in-process execution captures SIGINT/SIGTERM and only looks at them between steps (a
two-minute training step would swallow Ctrl-C); off the main thread it leaves signals alone, so
Ctrl-C reaches the demo at once and it can stop its servers. Runs cut short that way are marked
canceled in the instance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, TypeVar

import dagster as dg

from lake_schemas import AUDIO_EVENTS, AUDIO_FEATURES
from orchestration import CANDIDATE_MODEL, DRIFT_SENSOR, build_definitions, table_key
from sonolake import wiring
from sonolake.settings import Settings

T = TypeVar("T")

QUIET_LOGS: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps Dagster's step-by-step log off the demo's terminal (it is in the UI)."""


def candidate_config(*, epochs: int | None, light_timing: bool = True) -> dict[str, Any]:
    """Run config of the retrain job: the training knobs of ``candidate_model``."""
    config: dict[str, Any] = {"light_timing": light_timing}
    if epochs is not None:
        config["epochs"] = epochs
    return {"ops": {CANDIDATE_MODEL.to_python_identifier(): {"config": config}}}


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    """Metadata values of the last materialization of ``key`` in a run ({} if none)."""
    found: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key == key:
            found = {k: v.value for k, v in event.materialization.metadata.items()}
    return found


JOIN_INTERVAL_S = 0.2
"""How often the main thread wakes while a run executes (so signals are handled promptly)."""


def in_worker_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a daemon thread; the main thread waits, interruptible, for its result."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="dagster-run", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(JOIN_INTERVAL_S)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def cancel_unfinished_runs(instance: dg.DagsterInstance, message: str) -> int:
    """Mark the demo's runs still in progress (cut short by Ctrl-C) as canceled."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
    )
    for run in runs:
        instance.report_run_canceled(run, message=message)
    return len(runs)


class DemoGraph:
    """The code location for the demo's settings, bound to one instance."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.defs = build_definitions(settings)
        self.sensor_cursor: str | None = None

    def materialize(
        self,
        keys: Iterable[dg.AssetKey],
        *,
        partition_key: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection=set(keys)
        )
        return in_worker_thread(
            lambda: job.execute_in_process(
                instance=self.instance,
                partition_key=partition_key,
                run_config={**QUIET_LOGS, **(run_config or {})},
                tags={"sonolake/trigger": "demo", **(tags or {})},
                raise_on_error=False,
            )
        )

    def run_job(
        self, name: str, *, run_config: Mapping[str, Any], tags: Mapping[str, str]
    ) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(name)
        return in_worker_thread(
            lambda: job.execute_in_process(
                instance=self.instance,
                run_config={**QUIET_LOGS, **run_config},
                tags=dict(tags),
                raise_on_error=False,
            )
        )

    def event_dates(self) -> list[str]:
        lake = wiring.lake(self.settings)
        if not lake.exists(AUDIO_EVENTS):
            return []
        days: set[date] = set(lake.read(AUDIO_EVENTS, columns=["event_date"]).column(0).to_pylist())
        return sorted(d.isoformat() for d in days)

    def features(self) -> list[dg.ExecuteInProcessResult]:
        """gold.audio_features for every event date in the lake (idempotent)."""
        return [
            self.materialize([table_key(AUDIO_FEATURES)], partition_key=day)
            for day in self.event_dates()
        ]

    def resource(self, name: str) -> Any:
        """One of the code location's resources (as the environment chose it)."""
        return (self.defs.resources or {})[name]

    def sensor_tick(self) -> dg.SensorResult | dg.SkipReason:
        """One evaluation of the drift sensor, carrying its cursor like the daemon does."""
        sensor = self.defs.resolve_sensor_def(DRIFT_SENSOR)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.sensor_cursor,
            resources={"lake": self.resource("lake")},
        ) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            self.sensor_cursor = result.cursor
        return result  # type: ignore[return-value]
