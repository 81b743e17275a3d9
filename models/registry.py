"""The model registry: MLflow runs, registered versions, aliases and bundle resolution.

One MLflow run per trained model holds its params, metrics, the three ONNX artifacts (each an
MLflow ONNX model: FP32, INT8, FP16), ``model.json``, the confusion-matrix image and the
evaluation table. The FP32 model is registered as a version of the registered model (default
``audio-event-classifier``); the version's tags point at its INT8 and FP16 siblings, so a
version resolves back to a complete bundle folder (see the MODEL BUNDLE layout in
:mod:`models.bundle`). Training curves (one point per epoch) are the run's step metrics.

Aliases carry the lifecycle: ``challenger`` (newest candidate), ``champion`` (served) and
``previous-champion`` (what :meth:`Registry.rollback` puts back). A promotion is decided
(:meth:`Registry.decide`: the gate scores candidate and champion, nothing moves) and then
applied (:meth:`Registry.apply`: the verdict is recorded and, if it passed, the alias moves),
so a blocking check can sit between the two. Every promotion pushes the outgoing champion onto
a history kept as a registered-model tag, so repeated rollbacks walk back through earlier
champions instead of toggling between two versions.

MLflow takes seconds to import, so it is imported inside the methods that need it: a process
that only serves a bundle folder never pays for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.bundle import ARTIFACT_FILES, MANIFEST_FILE, read_bundle_manifest
from models.evaluation_log import EvaluationRecord, evaluation_table

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from models.promotion import PromotionDecision, PromotionGate

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
HISTORY_TAG = "sonolake.champion_history"
"""Registered-model tag: JSON list of earlier champions, oldest first (the rollback stack)."""
ARTIFACT_TAG_PREFIX = "sonolake.artifact."
"""Model-version tags ``sonolake.artifact.<fp32|int8|fp16>`` = the MLflow logged-model id."""
BUNDLE_RUN_DIR = "bundle"
"""Run artifact folder that holds model.json (and the evaluation files beside it)."""
WRITER = "models.registry"
CURVE_BATCH = 1000
"""Metric points per ``log_batch`` call (MLflow accepts at most 1,000)."""
NOISY_LOGGERS = ("mlflow.utils.environment", "mlflow.utils.uv_utils")
"""MLflow warns on every log_model that this uv environment has no pip, and that it found a
uv project; neither matters with explicit requirements, so log_bundle silences them."""

# MLflow reads these when it is imported. The platform runs offline by default, so MLflow's
# usage telemetry is off unless the user turns it on, and artifact downloads draw no progress
# bars into our CLI output. setdefault: an explicit user setting wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class UnknownModel(LookupError):
    """A model reference names no alias, version or bundle folder."""


class NoChampion(LookupError):
    """An operation needs a champion (or a previous one) and there is none."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference turned into a local bundle folder."""

    bundle_dir: Path
    version: str | None
    """Registry version, or None for a bundle folder given by path."""
    reference: str


@dataclass(frozen=True)
class VersionSummary:
    """One registered version as ``sonolake models`` lists it."""

    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    created_at: datetime
    metrics: dict[str, float] = field(default_factory=dict)
    feature_version: str | None = None


def onnx_pip_requirements(artifact: str) -> list[str]:
    """Explicit requirements for a logged ONNX model (inferring them takes ~15 s per model).

    The FP16 artifact is for the CUDA provider, so it names the GPU build of ONNX Runtime; the
    others run on the plain CPU build. Versions are those this process runs with.
    """
    import onnx
    import onnxruntime

    runtime = "onnxruntime-gpu" if artifact == "fp16" else "onnxruntime"
    return [f"onnx=={onnx.__version__}", f"{runtime}=={onnxruntime.__version__}"]


def create_sqlite_store(tracking_uri: str) -> None:
    """Create a SQLite tracking store that does not exist yet, whole, in one step.

    MLflow creates its tables and runs its migrations in the file itself, for several seconds,
    and any other process that opens the file meanwhile (a gateway worker following the
    champion alias, the Dagster daemon) finds it incomplete, migrates it at the same time and
    fails (``table _alembic_tmp_experiments already exists``). So the store is built in a
    private file and linked into place; a process that loses the race uses the winner's.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    target = Path(tracking_uri.removeprefix("sqlite:///"))
    if target.exists():
        return
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    target.parent.mkdir(parents=True, exist_ok=True)
    private = target.with_name(f".{target.name}.{os.getpid()}.creating")
    private.unlink(missing_ok=True)
    try:
        # the same default experiment MlflowClient would have made in the file itself
        store = SqlAlchemyStore(f"sqlite:///{private}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        with suppress(FileExistsError):  # another process linked its store first: use that
            os.link(private, target)  # atomic, and never replaces an existing file
    finally:
        private.unlink(missing_ok=True)


class Registry:
    """The registered model ``model_name`` in the MLflow store at ``tracking_uri``.

    ``artifact_root`` is where a new experiment keeps its artifacts (a local folder or a URI);
    it is only needed by :meth:`log_bundle`. Resolved bundles are cached under ``cache_dir``
    (default: :func:`default_cache_dir`), one folder per version. ``lake``
    (a :class:`lake_schemas.Lake`) receives a ``monitoring.model_evaluations`` row for every
    evaluation, promotion and rollback; without one nothing is recorded.
    """

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        artifact_root: Path | str | None = None,
        *,
        cache_dir: Path | None = None,
        lake: Any | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        self.cache_dir = (
            Path(cache_dir)
            if cache_dir is not None
            else default_cache_dir(tracking_uri, artifact_root)
        )
        self.lake = lake
        self._client: MlflowClient | None = None

    # ------------------------------------------------------------------ MLflow plumbing
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            create_sqlite_store(self.tracking_uri)
            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    @contextmanager
    def _fluent(self) -> Iterator[Any]:
        """MLflow's fluent API (runs, log_model) pointed at our store, then restored."""
        import mlflow

        previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        create_sqlite_store(self.tracking_uri)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.model_name)
        if experiment is not None:
            return str(experiment.experiment_id)
        if self.artifact_root is None:
            raise ValueError("artifact_root is needed to create the model's MLflow experiment")
        location = str(self.artifact_root)
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        return str(self.client.create_experiment(self.model_name, artifact_location=location))

    # ------------------------------------------------------------------ logging
    def log_bundle(
        self,
        bundle_dir: Path | str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        evaluation: Any = None,
        confusion_png: Path | str | None = None,
        *,
        run_name: str | None = None,
        set_challenger: bool = True,
        curves: Mapping[str, Sequence[float]] | None = None,
    ) -> str:
        """Log a trained bundle as one MLflow run, register it, alias it ``challenger``.

        ``evaluation`` is the evaluation table: a pandas DataFrame, a dict of columns, a list of
        row dicts, or a path to a CSV/JSON file. ``curves`` are learning curves, one value per
        epoch, logged as step metrics (step = epoch, from 1). Returns the new version number.
        """
        bundle = Path(bundle_dir)
        manifest = read_bundle_manifest(bundle)
        artifacts = {kind: bundle / name for kind, name in ARTIFACT_FILES.items()}
        if not artifacts["fp32"].exists():
            raise FileNotFoundError(
                f"{artifacts['fp32']} is missing: a bundle needs its FP32 model"
            )
        import onnx

        with self._fluent() as mlflow, _quiet(NOISY_LOGGERS):
            import mlflow.onnx

            experiment_id = self._experiment_id()
            with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
                if params:
                    mlflow.log_params({k: _param_value(v) for k, v in params.items()})
                numeric = {k: float(v) for k, v in metrics.items() if _is_number(v)}
                if numeric:
                    mlflow.log_metrics(numeric)
                _log_curves(self.client, run.info.run_id, curves or {})
                mlflow.set_tags(
                    {
                        "feature_version": manifest.get("feature_version", ""),
                        "sonolake.labels": json.dumps(manifest.get("labels", [])),
                    }
                )
                model_ids: dict[str, str] = {}
                for kind, path in artifacts.items():
                    if not path.exists():
                        log.warning("bundle %s has no %s artifact (%s)", bundle, kind, path.name)
                        continue
                    info = mlflow.onnx.log_model(
                        onnx.load(str(path)),
                        name=kind,
                        pip_requirements=onnx_pip_requirements(kind),
                        signature=_signature(path, manifest),
                        save_as_external_data=False,
                    )
                    model_ids[kind] = info.model_id
                mlflow.log_artifact(str(bundle / MANIFEST_FILE), BUNDLE_RUN_DIR)
                if confusion_png is not None:
                    mlflow.log_artifact(str(confusion_png), "evaluation")
                _log_evaluation(mlflow, evaluation)
                run_id = run.info.run_id
            # Inside the fluent block: MLflow's store resolves a ``models:/<id>`` source through
            # the process-wide tracking URI.
            version = self._register(
                model_ids, run_id, feature_version=manifest.get("feature_version", "")
            )
        if set_challenger:
            self.set_alias(CHALLENGER, str(version))
        return str(version)

    def _register(self, model_ids: Mapping[str, str], run_id: str, *, feature_version: str) -> str:
        """A new version whose source is the FP32 model; tags name its INT8/FP16 siblings."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(self.model_name)
        version = self.client.create_model_version(
            self.model_name,
            source=f"models:/{model_ids['fp32']}",
            run_id=run_id,
            model_id=model_ids["fp32"],
            tags={
                **{ARTIFACT_TAG_PREFIX + kind: mid for kind, mid in model_ids.items()},
                "feature_version": feature_version,
            },
        )
        return str(version.version)

    # ------------------------------------------------------------------ aliases and versions
    def aliases(self) -> dict[str, str]:
        """Alias → version of the registered model (empty when it does not exist yet)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException:
            return {}
        return {alias: str(version) for alias, version in model.aliases.items()}

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, or None (no alias, or no registered model)."""
        return self.aliases().get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def _delete_alias(self, alias: str) -> None:
        if alias in self.aliases():
            self.client.delete_registered_model_alias(self.model_name, alias)

    def versions(self) -> list[VersionSummary]:
        """Every registered version, newest first, with its aliases and run metrics."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.model_name}'")
        except MlflowException:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        summaries = []
        for mv in found:
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    metrics = dict(self.client.get_run(mv.run_id).data.metrics)
                except MlflowException:
                    metrics = {}
            summaries.append(
                VersionSummary(
                    version=str(mv.version),
                    aliases=tuple(sorted(by_version.get(str(mv.version), []))),
                    run_id=mv.run_id,
                    created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
                    metrics=metrics,
                    feature_version=(mv.tags or {}).get("feature_version") or None,
                )
            )
        return sorted(summaries, key=lambda s: int(s.version), reverse=True)

    # ------------------------------------------------------------------ resolution
    def resolve(self, reference: str) -> ResolvedModel:
        """``champion|challenger|<alias>|<version>|<path to a bundle folder>`` → local bundle."""
        reference = str(reference).strip()
        path = Path(reference).expanduser()
        if path.is_dir():
            if not (path / MANIFEST_FILE).exists():
                raise UnknownModel(f"{path} is a folder but holds no {MANIFEST_FILE}")
            return ResolvedModel(path.resolve(), None, reference)
        if reference.isdigit():
            return ResolvedModel(self.bundle_dir(reference), reference, reference)
        version = self.alias_version(reference) if _looks_like_alias(reference) else None
        if version is None:
            known = ", ".join(sorted(self.aliases())) or "none yet"
            raise UnknownModel(
                f"model {reference!r} is neither an alias of {self.model_name!r} "
                f"(aliases: {known}), a version number, nor a bundle folder"
            )
        return ResolvedModel(self.bundle_dir(version), version, reference)

    def bundle_dir(self, version: str) -> Path:
        """The bundle folder of a registered version, downloaded once and cached."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.model_name, str(version))
        except MlflowException:
            raise UnknownModel(
                f"{self.model_name!r} has no version {version}; see `sonolake models`"
            ) from None
        tags = mv.tags or {}
        model_ids = {
            kind: tags[ARTIFACT_TAG_PREFIX + kind]
            for kind in ARTIFACT_FILES
            if ARTIFACT_TAG_PREFIX + kind in tags
        }
        if "fp32" not in model_ids or not mv.run_id:
            raise UnknownModel(f"version {version} was not logged by Registry.log_bundle")
        # The logged-model id is globally unique, so a recreated store never hits a stale entry.
        target = self.cache_dir / self.model_name / f"v{version}-{model_ids['fp32']}"
        if (target / MANIFEST_FILE).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=target.parent))
        try:
            self._download_bundle(mv.run_id, model_ids, staging)
            try:
                staging.rename(target)  # atomic: concurrent resolvers see all files or none
            except OSError:
                if not (target / MANIFEST_FILE).exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _download_bundle(self, run_id: str, model_ids: Mapping[str, str], into: Path) -> None:
        from mlflow.artifacts import download_artifacts

        for kind, model_id in model_ids.items():
            scratch = into / f".{kind}"
            scratch.mkdir()
            # The logged model's own location, not ``models:/<id>``: that URI is resolved through
            # the process-wide tracking URI, which need not be ours.
            location = self.client.get_logged_model(model_id).artifact_location
            local = Path(download_artifacts(artifact_uri=location, dst_path=str(scratch)))
            shutil.move(str(local / "model.onnx"), into / ARTIFACT_FILES[kind])
            shutil.rmtree(scratch)
        scratch = into / ".run"
        scratch.mkdir()
        manifest = download_artifacts(
            run_id=run_id,
            artifact_path=f"{BUNDLE_RUN_DIR}/{MANIFEST_FILE}",
            dst_path=str(scratch),
            tracking_uri=self.tracking_uri,
        )
        shutil.move(manifest, into / MANIFEST_FILE)  # written last: its presence marks "complete"
        shutil.rmtree(scratch)

    # ------------------------------------------------------------------ lifecycle
    def champion_history(self) -> list[str]:
        """Earlier champions, oldest first: the stack :meth:`rollback` pops."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name).tags or {}
        except MlflowException:
            return []
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]

    def _set_history(self, history: Sequence[str]) -> None:
        self.client.set_registered_model_tag(
            self.model_name, HISTORY_TAG, json.dumps(list(history))
        )
        if history:
            self.set_alias(PREVIOUS_CHAMPION, history[-1])
        else:
            self._delete_alias(PREVIOUS_CHAMPION)

    def decide(self, version: str | None, gate: PromotionGate) -> PromotionDecision:
        """Judge ``version`` (default: the challenger) against the current champion.

        The gate scores both on its held-out set. Nothing moves and nothing is recorded: hand
        the decision to :meth:`apply` (perhaps after a check has looked at it).
        """
        if version is None:
            version = self.alias_version(CHALLENGER)
            if version is None:
                raise UnknownModel("no --version given and no challenger to promote")
        version = str(version)
        champion = self.alias_version(CHAMPION)
        candidate_dir = self.resolve(version).bundle_dir
        champion_dir = self.resolve(champion).bundle_dir if champion is not None else None
        return gate.decide(version, candidate_dir, champion, champion_dir)

    def apply(self, decision: PromotionDecision) -> PromotionDecision:
        """Record a decision in ``monitoring.model_evaluations``; if it passed, move ``champion``.

        Raises :class:`~models.promotion.StaleDecision`, moving nothing, when a passed decision
        was made against a champion that is no longer the champion.
        """
        from models.promotion import StaleDecision

        champion = self.alias_version(CHAMPION)
        if decision.passed:
            if champion != decision.champion_before:
                raise StaleDecision(
                    f"the champion changed from {decision.champion_before} to {champion} since "
                    f"version {decision.candidate_version} was evaluated; evaluate it again"
                )
            history = self.champion_history()
            if champion is not None:
                history.append(champion)
            self._set_history(history)
            self.set_alias(CHAMPION, decision.candidate_version)
        self.record(*decision.records())
        return decision

    def promote(self, version: str | None, gate: PromotionGate) -> PromotionDecision:
        """:meth:`decide`, then :meth:`apply`: the gate and the alias move in one call."""
        return self.apply(self.decide(version, gate))

    def rollback(self, *, reason: str | None = None) -> tuple[str, str]:
        """Put the previous champion back; returns (version rolled back, version restored)."""
        current = self.alias_version(CHAMPION)
        history = self.champion_history()
        if current is None or not history:
            raise NoChampion("there is no previous champion to roll back to")
        restored = history.pop()
        self.set_alias(CHAMPION, restored)
        self._set_history(history)
        self.client.set_model_version_tag(
            self.model_name, current, "sonolake.rolled_back_at", datetime.now(UTC).isoformat()
        )
        self.record(
            EvaluationRecord(
                model_version=restored,
                artifact="-",
                dataset="-",
                action="rollback",
                champion_before=current,
                champion_after=restored,
                reason=reason or f"rolled back from version {current}",
            )
        )
        return current, restored

    # ------------------------------------------------------------------ lake records
    def record(self, *records: EvaluationRecord, now: Callable[[], datetime] | None = None) -> None:
        """Append rows to ``monitoring.model_evaluations`` (no-op without a lake)."""
        if self.lake is None or not records:
            return
        from lake_schemas.tables import MODEL_EVALUATIONS

        at = (now or (lambda: datetime.now(UTC)))()
        table = evaluation_table(self.model_name, records, at)
        self.lake.append(MODEL_EVALUATIONS, table, writer=WRITER)


# ---------------------------------------------------------------------- helpers
def default_cache_dir(tracking_uri: str, artifact_root: Path | str | None) -> Path:
    """``model-cache`` beside the local artifact root, else beside a SQLite store, else in /tmp.

    With the default settings both give ``<state_dir>/model-cache``, so the CLI, Dagster and
    the gateway share one cache.
    """
    if artifact_root is not None and "://" not in str(artifact_root):
        return Path(artifact_root).expanduser().resolve().parent / "model-cache"
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).expanduser().parent / "model-cache"
    return Path(tempfile.gettempdir()) / "sonolake" / "model-cache"


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _param_value(value: Any) -> str:
    """MLflow params are strings of at most 6,000 characters; containers become JSON."""
    text = (
        json.dumps(value, sort_keys=True) if isinstance(value, dict | list | tuple) else str(value)
    )
    return text[:6000]


def _looks_like_alias(reference: str) -> bool:
    return bool(reference) and "/" not in reference and os.sep not in reference


def _signature(path: Path, manifest: Mapping[str, Any]) -> Any:
    """Tensor signature from the ONNX graph: ``logmel`` [batch, frames, mels] → ``probs``."""
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value: Any) -> TensorSpec:
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
        )
        return TensorSpec(np.dtype(np.float32), dims, value.name)

    inputs: list[ColSpec | TensorSpec] = [
        spec(v) for v in graph.input if v.name == manifest.get("input_name", "logmel")
    ]
    outputs: list[ColSpec | TensorSpec] = [
        spec(v) for v in graph.output if v.name == manifest.get("output_name", "probs")
    ]
    if not inputs or not outputs:
        return None
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _log_curves(client: MlflowClient, run_id: str, curves: Mapping[str, Sequence[float]]) -> None:
    """Each curve as one metric with a value per epoch (step 1 = the first epoch)."""
    from mlflow.entities import Metric

    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    points = [
        Metric(name, float(value), now_ms, step)
        for name, values in curves.items()
        for step, value in enumerate(values, start=1)
    ]
    for start in range(0, len(points), CURVE_BATCH):
        client.log_batch(run_id, metrics=points[start : start + CURVE_BATCH])


def _log_evaluation(mlflow: Any, evaluation: Any) -> None:
    """The evaluation table as a run artifact (a file as is, data through ``log_table``)."""
    if evaluation is None:
        return
    if isinstance(evaluation, str | Path):
        mlflow.log_artifact(str(evaluation), "evaluation")
        return
    if isinstance(evaluation, list):
        import pandas as pd

        evaluation = pd.DataFrame(evaluation)
    mlflow.log_table(evaluation, artifact_file="evaluation/evaluation.json")
