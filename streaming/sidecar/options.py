"""Pipeline options for the ways the landing transform runs.

Micro-batches: a bounded pipeline per batch, on Beam's in-process runner (measured start-up
~0.8 s) or on a Dask cluster (:func:`dask_options`, ``sonolake sidecar --runner dask``). As a
streaming job: the same :class:`~streaming.sidecar.pipeline.LandSpool` under ``--streaming`` on
Flink or Dataflow behind an unbounded source; only these options change (see docs/scaling.md).
"""

from __future__ import annotations

from typing import Any, cast

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PipelineOptionsT,
    _BeamArgumentParser,
)

DEFAULT_SESSION_GAP_S = 30.0
"""Cluster mode: a session's window closes after this much event-time silence (s)."""


class ClusterUnavailable(RuntimeError):
    """A cluster runner could not run the batch (scheduler unreachable, no workers, workers
    dying beyond the engine's retries). Nothing was committed: the batch simply runs again."""


class WorkersLost(ClusterUnavailable):
    """A worker left during the run, so a sink may have written twice: run the batch again."""


# Every builder passes an explicit empty flag list: by default Beam parses ``sys.argv``, which
# here belongs to the ``sonolake`` command line.


class LocalOptions(PipelineOptions):
    """Options of the in-process micro-batch pipeline, with each view made once.

    Beam asks the pipeline's options for a typed view (``view_as``) about 200 times while it
    builds and runs one small graph, and every view re-runs ``argparse`` over the flags:
    about a third of a micro-batch's fixed cost here. A view shares the options' values
    (``_all_options``) by design, so handing out the same view again changes nothing but the
    time; a batch builds a fresh ``LocalOptions``.
    """

    def view_as(self, cls: type[PipelineOptionsT]) -> PipelineOptionsT:
        views: dict[type, Any] = self.__dict__.setdefault("_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return cast("PipelineOptionsT", views[cls])

    def __getstate__(self) -> dict[str, Any]:
        """The options without their views: ``beam.Pipeline`` deep-copies its options, and
        copying each view re-ran ``argparse`` for it; the copy makes its own views."""
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


def local_options() -> PipelineOptions:
    """Beam's in-process bundle-based direct runner (``apache_beam.runners.direct``).

    Measured on one 10k-chunk micro-batch: ~1.5 s CPU against ~2.7 s for the Fn-API flavour
    the ``DirectRunner`` name picks for batch pipelines, and ~1.1 s for the same work in plain
    Python; it executes the transforms in this process with no worker protocol in between.
    Pipeline type checks are off: every element is an Arrow table (``ArrowRows``) whose
    schema the landing step checks itself, and inferring hints costs each batch ~0.05 s.
    """
    return LocalOptions(
        [],
        runner="BundleBasedDirectRunner",
        save_main_session=False,
        pipeline_type_check=False,
    )


class FlinkCheckpointOptions(PipelineOptions):
    """Flink's checkpoint interval, which Beam's Python SDK does not declare itself.

    The portable Flink runner forwards every *declared* option to the Java job server, where
    ``FlinkPipelineOptions.checkpointingInterval`` reads it; an undeclared keyword is dropped
    with "Discarding invalid overrides" and the job would run without checkpoints (no
    exactly-once state). Declaring it here makes it survive into what Beam sends.
    """

    @classmethod
    def _add_argparse_args(cls, parser: _BeamArgumentParser) -> None:
        parser.add_argument(
            "--checkpointing_interval",
            type=int,
            default=None,
            help="Flink checkpoint interval in milliseconds.",
        )


def flink_options(
    *,
    flink_master: str = "localhost:8081",
    parallelism: int = 4,
    checkpointing_interval_ms: int = 10_000,
    environment_type: str = "DOCKER",
    job_name: str = "sonolake-sidecar",
) -> PipelineOptions:
    """Flink through Beam's portable Flink job server (the runner fetches its jar)."""
    return PipelineOptions(
        [],
        runner="FlinkRunner",
        streaming=True,
        flink_master=flink_master,
        parallelism=parallelism,
        checkpointing_interval=checkpointing_interval_ms,
        environment_type=environment_type,
        job_name=job_name,
    )


def dataflow_options(
    *,
    project: str,
    region: str,
    temp_location: str,
    max_num_workers: int = 10,
    job_name: str = "sonolake-sidecar",
    sdk_container_image: str | None = None,
) -> PipelineOptions:
    """Google Cloud Dataflow, streaming engine on, autoscaling by throughput."""
    flags = dict(
        runner="DataflowRunner",
        streaming=True,
        project=project,
        region=region,
        temp_location=temp_location,
        job_name=job_name,
        enable_streaming_engine=True,
        autoscaling_algorithm="THROUGHPUT_BASED",
        max_num_workers=max_num_workers,
    )
    if sdk_container_image:
        flags["sdk_container_image"] = sdk_container_image
    return PipelineOptions([], **flags)


DASK_RUNNER = "streaming.sidecar.dask_runner.SidecarDaskRunner"
"""Beam's Dask runner completed for the landing transform (see that module)."""


def dask_options(
    scheduler: str, *, partitions: int = 4, connect_timeout_s: int = 10
) -> PipelineOptions:
    """One micro-batch as a bounded pipeline on the Dask scheduler at ``scheduler``.

    ``partitions``: Dask bag partitions of the batch's segments (and session shards of the
    enrichment), so that many workers share a batch. The Dask options are passed as flags:
    keyword overrides of an options class Beam has not imported yet are silently dropped.
    """
    return PipelineOptions(
        [
            f"--runner={DASK_RUNNER}",
            f"--dask_client_address={scheduler}",
            f"--dask_npartitions={partitions}",
            f"--dask_connection_timeout={connect_timeout_s}",
        ],
        save_main_session=False,
    )
