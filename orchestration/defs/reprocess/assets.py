"""``gold/reprocessed_predictions``: a day of bronze re-segmented and re-scored, on request.

The same job as ``sonolake reprocess`` (:func:`streaming.reprocess.rederive`: the gateway's
segmenter, the chosen model) for one UTC day of chunks, appending a new versioned set of
``gold.predictions`` rows under the run id ``dagster-<day>-<model version>``. Materialized by
hand (a backfill after a promotion, or over audio landed without decisions), never
automatically. Idempotent: a day already re-scored by that model version is skipped.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow.compute as pc

from lake_schemas.tables import AUDIO_CHUNKS, PREDICTIONS
from models.serving import ServingEngine
from orchestration.keys import table_key, writer_pool
from orchestration.partitions import event_date_partitions
from orchestration.resources import LakeResource, ModelRegistryResource
from streaming.reprocess import rederive

WRITER = "dagster:gold/reprocessed_predictions"


class ReprocessConfig(dg.Config):
    model: str = "champion"
    """An alias (champion, challenger), a registry version, or a bundle folder."""


@dg.asset(
    key=dg.AssetKey(["gold", "reprocessed_predictions"]),
    deps=[table_key(AUDIO_CHUNKS)],
    partitions_def=event_date_partitions,
    group_name="reprocess",
    kinds={"python", "delta", "onnx"},
    description="A day of bronze re-segmented and re-scored into gold.predictions (a new run).",
    pool=writer_pool(PREDICTIONS),
)
def reprocessed_predictions(
    context: dg.AssetExecutionContext,
    config: ReprocessConfig,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    """Re-derive the partition's utterances and predictions with ``config.model``."""
    day = datetime.fromisoformat(context.partition_key).replace(tzinfo=UTC)
    opened = lake.open()
    resolved = registry.open(opened).resolve(config.model)
    engine = ServingEngine.from_bundle(resolved.bundle_dir, model_version=resolved.version)
    run_id = f"dagster-{context.partition_key}-{engine.model_version}"
    done = opened.read(PREDICTIONS, columns=["run_id"], filter=[("run_id", "=", run_id)])
    if done.num_rows:
        context.log.info(f"{run_id}: already landed ({done.num_rows} predictions); skipped")
        return dg.MaterializeResult(metadata={"run_id": run_id, "skipped_existing": True})
    chunks = opened.read(
        AUDIO_CHUNKS,
        filter=[("event_time", ">=", day), ("event_time", "<", day + timedelta(days=1))],
    )
    result = rederive(chunks, engine, run_id=run_id)
    if result.predictions.num_rows:
        opened.append(PREDICTIONS, result.predictions, writer=WRITER)
    finals = pc.sum(result.predictions.column("is_final")).as_py() or 0
    return dg.MaterializeResult(
        metadata={
            "run_id": run_id,
            "model_version": engine.model_version or "-",
            "sessions": result.sessions,
            "chunks": result.chunks,
            "predictions": result.predictions.num_rows,
            "utterances": finals,
            "skipped_existing": False,
        }
    )
