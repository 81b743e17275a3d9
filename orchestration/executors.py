"""How a run's steps execute, from ``SONOLAKE_DAGSTER_EXECUTOR``.

``multiprocess`` (the default) leaves Dagster's own choice: a process per step on this machine.
``in-process`` runs every step in the run's process. ``dask`` submits each step as a task to
the Dask cluster at ``SONOLAKE_DASK_SCHEDULER`` — the same cluster the sidecar's ``dask``
runner uses — so the feature and training steps run on its workers. A step on a worker loads
this code location itself (``orchestration.definitions:defs``, with the worker's own
``SONOLAKE_*`` environment) and writes its events to the run's instance, so the instance must
be persistent and reachable from the workers (the Postgres-backed one across machines), and
the lake and model store must be shared storage (docs/scaling.md).

The step runner is ``dagster_dask``'s own (``query_on_dask_worker``); only the submission
differs from its ``dask_executor``: with dask ≥ 2025 ``Client.submit`` walks every tuple-like
argument, and Dagster's ``@record`` state (``KnownExecutionState``) refuses iteration, so a run
never starts. Here the step's arguments travel inside one callable, and task keys carry the
run id, so two runs of one job on the same cluster cannot share a key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._utils import iterate_with_context

from sonolake.settings import BadSettings, Settings


@dataclass(frozen=True)
class _StepOnWorker:
    """One step's call on a worker; ``dependencies`` (the upstream steps' futures) only orders."""

    recon_job: Any
    dagster_run: Any
    run_config: Any
    step_keys: Sequence[str]
    instance_ref: Any
    known_state: Any

    def __call__(self, dependencies: Sequence[Any]) -> Sequence[dg.DagsterEvent]:
        from dagster_dask.executor import query_on_dask_worker

        return query_on_dask_worker(
            dependencies,
            self.recon_job,
            self.dagster_run,
            self.run_config,
            self.step_keys,
            self.instance_ref,
            self.known_state,
        )


class DaskStepExecutor(dg.Executor):
    """Each step a task on an existing Dask cluster, in dependency order."""

    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[dg.DagsterEvent]:
        from dagster_dask.executor import get_dask_resource_requirements
        from distributed import Client, as_completed

        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("the dask executor needs a persistent instance")
        run = plan_context.dagster_run
        instance_ref = plan_context.instance.get_ref()
        with Client(self.address) as client:
            futures: dict[str, Any] = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    upstream = [
                        futures[key] for inp in step.step_inputs for key in inp.dependency_keys
                    ]
                    call = _StepOnWorker(
                        plan_context.reconstructable_job,
                        run,
                        plan_context.run_config,
                        [step.key],
                        instance_ref,
                        execution_plan.known_state,
                    )
                    futures[step.key] = client.submit(
                        call,
                        upstream,
                        key=f"{run.job_name}.{step.key}.{run.run_id}",
                        resources=get_dask_resource_requirements(step.tags),
                        pure=False,
                    )
            done = as_completed(list(futures.values()), with_results=True)
            for _future, events in iterate_with_context(raise_execution_interrupts, done):
                yield from events


@dg.executor(
    name="dask",
    config_schema={"address": dg.Field(str, description="Scheduler, tcp://HOST:PORT.")},
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_step_executor(init_context: dg.InitExecutorContext) -> DaskStepExecutor:
    """Steps as tasks on the Dask cluster at ``address``."""
    return DaskStepExecutor(str(init_context.executor_config["address"]))


def executor_for(settings: Settings) -> dg.ExecutorDefinition | None:
    """The code location's default executor (None: Dagster's multiprocess default)."""
    if settings.dagster_executor == "in-process":
        return dg.in_process_executor
    if settings.dagster_executor == "dask":
        if not settings.dask_scheduler:
            raise BadSettings(
                "SONOLAKE_DAGSTER_EXECUTOR=dask needs SONOLAKE_DASK_SCHEDULER=tcp://HOST:PORT"
            )
        return dask_step_executor.configured({"address": settings.dask_scheduler}, name="dask")
    return None
