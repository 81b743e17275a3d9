"""How a run's steps execute, from ``SONOLAKE_DAGSTER_EXECUTOR``.

``multiprocess`` (the default) leaves Dagster's own choice: a process per step on this machine.
``in-process`` runs every step in the run's process. ``dask`` submits each step as a task to
the Dask cluster at ``SONOLAKE_DASK_SCHEDULER`` — the same cluster the sidecar's ``dask``
runner uses — so the feature and training steps run on its workers. A step on a worker loads
this code location itself (``orchestration.definitions:defs``, with the worker's own
``SONOLAKE_*`` environment) and writes its events to the run's instance, so the instance must
be persistent and reachable from the workers (the Postgres-backed one across machines), and
the lake and model store must be shared storage (docs/scaling.md).
"""

from __future__ import annotations

import dagster as dg

from sonolake.settings import BadSettings, Settings


def executor_for(settings: Settings) -> dg.ExecutorDefinition | None:
    """The code location's default executor (None: Dagster's multiprocess default)."""
    if settings.dagster_executor == "in-process":
        return dg.in_process_executor
    if settings.dagster_executor == "dask":
        from dagster_dask import dask_executor

        if not settings.dask_scheduler:
            raise BadSettings(
                "SONOLAKE_DAGSTER_EXECUTOR=dask needs SONOLAKE_DASK_SCHEDULER=tcp://HOST:PORT"
            )
        return dask_executor.configured(
            {"cluster": {"existing": {"address": settings.dask_scheduler}}},
            name="dask_executor",
        )
    return None
