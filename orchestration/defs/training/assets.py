"""The model lifecycle as assets: training set → candidate → evaluation → (gate) → champion.

``candidate_model`` trains on the training side of the set, exports the ONNX bundle (FP32, INT8,
FP16) and registers it in MLflow as the ``challenger``. ``model_evaluation`` scores candidate
and champion on the SAME held-out devices with the promotion gate's rules; its blocking check
``promotion_gate`` stops the run before ``champion_model`` when the candidate does not beat
the champion or misses the latency budget. ``champion_model`` moves the ``champion`` alias; the
gateway's engine follows that alias and hot-swaps to the new version without dropping streams.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES, MODEL_EVALUATIONS
from models.promotion import PromotionDecision
from orchestration.defs.training.candidate import (
    CandidateModel,
    TrainingConfig,
    train_candidate,
)
from orchestration.defs.training.keys import (
    CANDIDATE_MODEL,
    CHAMPION_MODEL,
    MODEL_EVALUATION,
    TRAINING_SET,
)
from orchestration.defs.training.resources import ModelLifecycleResource
from orchestration.lake_keys import table_key
from orchestration.lake_stats import snapshot_metadata, table_snapshot
from orchestration.promotion import ApprovedGate, decide, evaluation_metadata, heldout_of
from orchestration.resources import LakeResource, ModelRegistryResource, PlatformPaths
from orchestration.training_data import TrainingSet, write_training_set

EVALUATIONS_POOL = "lake_writer_monitoring_model_evaluations"
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
) -> dg.Output[CandidateModel]:
    candidate = train_candidate(
        training_set,
        config,
        default_preset=lifecycle.training_preset,
        lake=lake.open(),
        registry=registry.open(lake.open()),
        work_dir=paths.work_dir("bundles", context.run_id),
        log=context.log.info,
    )
    metadata: dict[str, Any] = {
        "model_version": candidate.version,
        "preset": candidate.preset,
        "accuracy": dg.MetadataValue.float(candidate.metrics["accuracy"]),
        "macro_f1": dg.MetadataValue.float(candidate.metrics["macro_f1"]),
        "train_seconds": dg.MetadataValue.float(candidate.train_seconds),
        "mlflow_run": dg.MetadataValue.url(
            registry.run_url(candidate.experiment_id, candidate.run_id)
        ),
        "mlflow_model": dg.MetadataValue.url(registry.model_url(candidate.version)),
        "bundle": dg.MetadataValue.path(candidate.bundle_dir),
    }
    if candidate.confusion_png:
        metadata["confusion_matrix"] = dg.MetadataValue.md(candidate.confusion_markdown())
    return dg.Output(candidate, metadata=metadata)


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
    candidate_model: CandidateModel,
    training_set: TrainingSet,
    lake: LakeResource,
    registry: ModelRegistryResource,
    lifecycle: ModelLifecycleResource,
) -> dg.Output[PromotionDecision]:
    models = registry.open(lake.open())
    heldout = heldout_of(training_set)
    decision = decide(models, candidate_model.version, heldout, lifecycle.gate_policy())
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
        # a rejection is recorded here, because champion_model will not run
        registry.open(lake.open()).record(*model_evaluation.records())
        context.op_execution_context.log_event(
            dg.AssetMaterialization(
                asset_key=table_key(MODEL_EVALUATIONS),
                metadata=snapshot_metadata(table_snapshot(lake, MODEL_EVALUATIONS)),
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
    ins={
        "model_evaluation": dg.AssetIn(MODEL_EVALUATION),
        "training_set": dg.AssetIn(TRAINING_SET),
    },
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
    training_set: TrainingSet,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    models = registry.open(lake.open())
    gate = ApprovedGate(heldout=heldout_of(training_set), decision=model_evaluation)
    decision = models.promote(model_evaluation.candidate_version, gate)
    context.log.info(f"champion: {decision.champion_before or 'none'} → {decision.champion_after}")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=table_key(MODEL_EVALUATIONS),
            metadata=snapshot_metadata(table_snapshot(lake, MODEL_EVALUATIONS)),
        )
    )
    return dg.MaterializeResult(
        metadata={
            "champion_version": decision.champion_after or "none",
            "previous_champion": decision.champion_before or "none",
            "accuracy": dg.MetadataValue.float(decision.candidate.accuracy),
            "mlflow_model": dg.MetadataValue.url(registry.model_url(decision.candidate_version)),
            "bundle": dg.MetadataValue.path(
                str(Path(models.resolve(decision.candidate_version).bundle_dir))
            ),
        }
    )
