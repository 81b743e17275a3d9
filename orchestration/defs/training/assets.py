"""The model lifecycle as assets: training set → candidate → evaluation → (gate) → champion.

``training_set`` reads the labelled events from the lake (:mod:`models.lake_dataset`).
``candidate_model`` runs the one training pipeline (:func:`models.candidate.train_candidate`,
what ``sonolake train`` runs too): train on the training devices, export the ONNX bundle
(FP32, INT8, FP16), evaluate it, register it in MLflow as the ``challenger``.
``model_evaluation`` decides the promotion (:meth:`models.registry.Registry.decide`: candidate
and champion scored on the SAME held-out devices); its blocking check ``promotion_gate`` stops
the run before ``champion_model`` when the candidate does not beat the champion or misses the
latency budget. ``champion_model`` applies that decision (:meth:`~models.registry.Registry.apply`)
and moves the ``champion`` alias; the gateway's engine follows it and hot-swaps.
"""

from datetime import timedelta
from typing import Any

import dagster as dg

from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES, MODEL_EVALUATIONS
from models.candidate import Candidate, train_candidate
from models.evaluation import LIGHT_PROBE, SpeedProbe
from models.lake_dataset import TrainingSet, reference_features, write_training_set
from models.promotion import PromotionDecision, PromotionGate
from orchestration.defs.training.candidate import (
    TrainingConfig,
    candidate_metadata,
    evaluation_metadata,
)
from orchestration.defs.training.resources import ModelLifecycleResource
from orchestration.keys import (
    CANDIDATE_MODEL,
    CHAMPION_MODEL,
    MODEL_EVALUATION,
    TRAINING_SET,
    table_key,
    writer_pool,
)
from orchestration.lake_metadata import snapshot_metadata
from orchestration.resources import LakeResource, ModelRegistryResource, PlatformPaths

EVALUATIONS_POOL = writer_pool(MODEL_EVALUATIONS)
"""monitoring.model_evaluations is appended by the gate and by promotion: one at a time."""


def _label_table(counts: dict[str, int]) -> str:
    rows = "\n".join(f"| {label} | {n} |" for label, n in counts.items())
    return f"| label | windows |\n| --- | --- |\n{rows}"


@dg.asset(
    key=TRAINING_SET,
    deps=[table_key(AUDIO_EVENTS), table_key(AUDIO_CHUNKS), table_key(AUDIO_FEATURES)],
    group_name="training",
    kinds={"python", "numpy"},
    description="Labelled events from the lake as 1-s windows, split so no device (speaker) "
    "is on both sides.",
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
)
def training_set(
    context: dg.AssetExecutionContext, lake: LakeResource, paths: PlatformPaths
) -> dg.Output[TrainingSet]:
    built = write_training_set(lake.open(), paths.work_dir("training_sets"))
    if built.n_train == 0 or built.n_test == 0:
        raise dg.Failure(
            f"the lake holds {built.n_train} training and {built.n_test} held-out labelled "
            "windows; replay labelled recordings from more devices (`sonolake replay --labels`)",
            allow_retries=False,
        )
    context.log.info(
        f"training set {built.set_id}: {built.n_train} windows from {built.train_devices} "
        f"devices, held out {built.n_test} from {built.test_devices}"
    )
    return dg.Output(
        built,
        metadata={
            "set_id": built.set_id,
            "train_windows": built.n_train,
            "heldout_windows": built.n_test,
            "train_devices": built.train_devices,
            "heldout_devices": built.test_devices,
            "labels": dg.MetadataValue.md(_label_table(built.label_counts)),
            "path": dg.MetadataValue.path(built.path),
        },
    )


@dg.asset(
    key=CANDIDATE_MODEL,
    ins={"training_set": dg.AssetIn(TRAINING_SET)},
    group_name="training",
    kinds={"jax", "onnx", "mlflow"},
    description="Train on the training devices, export FP32/INT8/FP16 ONNX, register in MLflow "
    "as the challenger (with the training events' features as its drift reference).",
    retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
    pool="model_training",
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    training_set: TrainingSet,
    lake: LakeResource,
    registry: ModelRegistryResource,
    paths: PlatformPaths,
    lifecycle: ModelLifecycleResource,
) -> dg.Output[Candidate]:
    from models.training import preset  # JAX: imported by the run that trains, not at load

    name = config.preset or lifecycle.training_preset
    training, event_ids = training_set.training_side()
    heldout = training_set.heldout()
    context.log.info(f"training preset {name!r} on {len(training)} windows")
    opened = lake.open()
    candidate = train_candidate(
        training,
        heldout,
        preset_name=name,
        config=preset(name, epochs=config.epochs, ensemble=config.ensemble, seed=config.seed),
        bundle_dir=paths.work_dir("bundles", context.run_id) / "bundle",
        registry=registry.open(opened),
        speed=LIGHT_PROBE if config.light_timing else SpeedProbe(),
        params={"training_set": training_set.set_id},
        run_name=f"lake-{training_set.set_id}-{name}",
        drift_reference=reference_features(opened, event_ids),
        snapshot_at=training_set.built_at,
        on_epoch=lambda r: context.log.info(
            f"member {r.member} epoch {r.epoch}/{r.epochs} loss {r.loss:.3f}"
        ),
    )
    context.log.info(
        f"registered version {candidate.version}: accuracy "
        f"{candidate.metrics['accuracy']:.3f} on {heldout.name}"
    )
    return dg.Output(candidate, metadata=candidate_metadata(candidate, registry))


@dg.asset(
    key=MODEL_EVALUATION,
    ins={
        "candidate_model": dg.AssetIn(CANDIDATE_MODEL),
        "training_set": dg.AssetIn(TRAINING_SET),
    },
    group_name="training",
    kinds={"onnx"},
    description="Score candidate and champion (INT8, CPU) on the same held-out devices and "
    "apply the promotion gate's rules.",
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    candidate_model: Candidate,
    training_set: TrainingSet,
    lake: LakeResource,
    registry: ModelRegistryResource,
    lifecycle: ModelLifecycleResource,
) -> dg.Output[PromotionDecision]:
    opened = lake.open()
    gate = PromotionGate.on_lake(training_set.heldout(), lifecycle.gate_policy(), opened)
    decision = registry.open(opened).decide(candidate_model.version, gate)
    context.log.info(f"gate for version {decision.candidate_version}: {decision.reason}")
    return dg.Output(decision, metadata=evaluation_metadata(decision))


@dg.asset_check(
    asset=MODEL_EVALUATION,
    blocking=True,
    description="The candidate beats the champion on the same held-out devices and meets the "
    "latency budget; otherwise the run stops before the champion alias moves.",
    pool=EVALUATIONS_POOL,
)
def promotion_gate(
    context: dg.AssetCheckExecutionContext,
    model_evaluation: PromotionDecision,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.AssetCheckResult:
    if not model_evaluation.passed:
        # the rejection is recorded here, because champion_model will not run
        opened = lake.open()
        registry.open(opened).apply(model_evaluation)
        context.op_execution_context.log_event(
            dg.AssetMaterialization(
                asset_key=table_key(MODEL_EVALUATIONS),
                metadata=snapshot_metadata(opened.table_snapshot(MODEL_EVALUATIONS)),
            )
        )
    return dg.AssetCheckResult(
        passed=model_evaluation.passed,
        description=model_evaluation.reason,
        metadata={
            "candidate_version": model_evaluation.candidate_version,
            "champion_before": model_evaluation.champion_before or "none",
        },
    )


@dg.asset(
    key=CHAMPION_MODEL,
    ins={"model_evaluation": dg.AssetIn(MODEL_EVALUATION)},
    group_name="training",
    kinds={"mlflow"},
    description="Move the MLflow alias `champion` to the candidate that passed the gate (the "
    "gateway's engine follows it and hot-swaps).",
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(days=2)),
    pool=EVALUATIONS_POOL,
)
def champion_model(
    context: dg.AssetExecutionContext,
    model_evaluation: PromotionDecision,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    opened = lake.open()
    models = registry.open(opened)
    decision = models.apply(model_evaluation)
    context.log.info(f"champion: {decision.champion_before or 'none'} → {decision.champion_after}")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=table_key(MODEL_EVALUATIONS),
            metadata=snapshot_metadata(opened.table_snapshot(MODEL_EVALUATIONS)),
        )
    )
    metadata: dict[str, Any] = {
        "champion_version": decision.champion_after or "none",
        "previous_champion": decision.champion_before or "none",
        "accuracy": dg.MetadataValue.float(decision.candidate.accuracy),
        "mlflow_model": dg.MetadataValue.url(registry.model_url(decision.candidate_version)),
        "bundle": dg.MetadataValue.path(str(models.resolve(decision.candidate_version).bundle_dir)),
    }
    return dg.MaterializeResult(metadata=metadata)
