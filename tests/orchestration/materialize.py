"""Run parts of the code location in process, on a persistent instance, and read the results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from orchestration import build_definitions
from sonolake.settings import Settings


def run_assets(
    settings: Settings,
    instance: dg.DagsterInstance,
    keys: Iterable[dg.AssetKey | str],
    *,
    partition_key: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    raise_on_error: bool = True,
    job_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize a selection of the real definitions (with their real resources)."""
    defs = build_definitions(settings)
    if job_name is not None:
        job = defs.resolve_job_def(job_name)
    else:
        selection = {dg.AssetKey.from_user_string(k) if isinstance(k, str) else k for k in keys}
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=selection)
    return job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config=dict(run_config or {}),
        raise_on_error=raise_on_error,
        tags=dict(tags or {}),
    )


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey | str) -> dict[str, Any]:
    """Metadata values of the (last) materialization of ``key`` in a run."""
    wanted = dg.AssetKey.from_user_string(key) if isinstance(key, str) else key
    found: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == wanted:
            found = {k: v.value for k, v in materialization.metadata.items()}
    return found


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """``asset:check`` → evaluation, for every check that ran."""
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }
