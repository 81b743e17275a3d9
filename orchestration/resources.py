"""Resources, chosen by environment in one place: a local lake, or an S3 lake.

``Settings.environment`` decides which implementation the assets get; assets only ever see
the interface (:class:`LakeResource`, :class:`ModelRegistryResource`, :class:`PlatformPaths`).
The objects behind them are built by :mod:`sonolake.wiring`, as the command line builds them,
from the resources' configured fields. Secrets never appear as literals: the S3 credentials are
:class:`dagster.EnvVar` references to the same ``SONOLAKE_`` variables the settings read, so
the Dagster UI shows the variable's name, never its value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_dbt import DbtCliResource
from pydantic import PrivateAttr

from orchestration.defs.analytics.project import dbt_executable, dbt_project
from orchestration.defs.training.resources import ModelLifecycleResource
from sonolake import wiring
from sonolake.settings import Settings

if TYPE_CHECKING:
    from lake_schemas import Lake
    from models.registry import Registry


class LakeResource(dg.ConfigurableResource):
    """The Delta lake on the local filesystem (the default on one machine)."""

    root: str
    """Absolute path of the lake root."""
    catalog_path: str | None = None
    """DuckDB catalog file analysts open (None: the lake's default, ``<root>/catalog.duckdb``)."""

    _lake: Any = PrivateAttr(default=None)

    def storage_options(self) -> dict[str, str]:
        """delta-rs / object_store options; none for a local folder."""
        return {}

    def open(self) -> Lake:
        """The lake, opened once per resource instance (one run) and reused by its assets."""
        if self._lake is None:
            self._lake = wiring.open_lake(self.root, self.storage_options(), self.catalog_path)
        return self._lake

    def location(self, relative_path: str) -> str:
        """``<root>/<relative_path>``: where a file beside the tables lives."""
        return f"{self.root.rstrip('/')}/{relative_path.strip('/')}"

    def save_file(self, relative_path: str, data: bytes, content_type: str) -> str:
        """Store a report (HTML, PNG) in the lake beside the tables; returns its location."""
        target = Path(self.location(relative_path))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        return str(target)

    def read_file(self, location: str) -> bytes:
        """Bytes of a file :meth:`save_file` returned."""
        return Path(location).read_bytes()


class S3LakeResource(LakeResource):
    """The Delta lake in S3 (or an S3-compatible store), credentials through dagster-aws."""

    s3: S3Resource
    allow_http: bool = False
    """Plain-HTTP endpoints (test stores such as moto or MinIO without TLS)."""
    sse: str = "none"
    """Server-side encryption of every object written: none, AES256 or aws:kms."""
    sse_kms_key_id: str | None = None

    def storage_options(self) -> dict[str, str]:
        return wiring.s3_storage_options(
            region=self.s3.region_name,
            endpoint_url=self.s3.endpoint_url,
            access_key_id=self.s3.aws_access_key_id,
            secret_access_key=self.s3.aws_secret_access_key,
            allow_http=self.allow_http,
            sse=self.sse,
            sse_kms_key_id=self.sse_kms_key_id,
        )

    def _bucket_key(self, location: str) -> tuple[str, str]:
        parsed = urlparse(location)
        return parsed.netloc, parsed.path.lstrip("/")

    def save_file(self, relative_path: str, data: bytes, content_type: str) -> str:
        location = self.location(relative_path)
        bucket, key = self._bucket_key(location)
        self.s3.get_client().put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            **wiring.s3_put_arguments(self.sse, self.sse_kms_key_id),
        )
        return location

    def read_file(self, location: str) -> bytes:
        bucket, key = self._bucket_key(location)
        return self.s3.get_client().get_object(Bucket=bucket, Key=key)["Body"].read()


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow registry that holds every candidate and the ``champion`` alias."""

    tracking_uri: str
    model_name: str
    artifact_root: str
    cache_dir: str
    """Downloaded bundles, shared with the command line and the gateway."""
    ui_url: str
    """Where the MLflow UI serves this store (``SONOLAKE_MLFLOW_UI_URL``): the base of the
    links in asset metadata."""
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    sse: str = "none"
    sse_kms_key_id: str | None = None
    """S3 artifacts (``artifact_root`` = ``s3://…``): where, credentials, encryption."""

    def open(self, lake: Lake) -> Registry:
        return wiring.open_registry(
            self.tracking_uri,
            self.model_name,
            self.artifact_root,
            self.cache_dir,
            lake,
            wiring.mlflow_s3_environment(
                self.artifact_root,
                region=self.s3_region,
                endpoint_url=self.s3_endpoint_url,
                access_key_id=self.aws_access_key_id,
                secret_access_key=self.aws_secret_access_key,
                sse=self.sse,
                sse_kms_key_id=self.sse_kms_key_id,
            ),
        )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to an MLflow run in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def artifact_url(self, experiment_id: str, run_id: str, path: str) -> str:
        """Link to one artifact of a run (the MLflow UI previews HTML and images)."""
        return f"{self.run_url(experiment_id, run_id)}/artifactPath/{path}"

    def model_url(self, version: str) -> str:
        """Link to a registered model version in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"


class PlatformPaths(dg.ConfigurableResource):
    """Local places the assets read or write besides the lake."""

    state_dir: str
    """Scratch and state (training sets, bundles before they are registered)."""
    spool_dir: str
    """The gateway's durable spool; its backlog is the sidecar's lag."""
    data_dir: str
    """The real recordings (noise clips for augmentation, demo corpora)."""

    def work_dir(self, *parts: str) -> Path:
        path = Path(self.state_dir).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class RetentionPolicy(dg.ConfigurableResource):
    """How long raw audio stays in bronze (from ``SONOLAKE_BRONZE_PCM_RETENTION_DAYS``)."""

    bronze_pcm_retention_days: int = 30


def _lake_resource(settings: Settings) -> LakeResource:
    path = wiring.catalog_path(settings)
    catalog = str(path) if path is not None else None
    if settings.environment in ("s3", "postgres"):
        s3 = S3Resource(
            region_name=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=dg.EnvVar("SONOLAKE_AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("SONOLAKE_AWS_SECRET_ACCESS_KEY"),
        )
        return S3LakeResource(
            root=settings.lake_root,
            catalog_path=catalog,
            s3=s3,
            allow_http=settings.aws_allow_http,
            sse=settings.s3_sse,
            sse_kms_key_id=settings.s3_sse_kms_key_id,
        )
    return LakeResource(root=settings.lake_root, catalog_path=catalog)


def _registry_resource(settings: Settings) -> ModelRegistryResource:
    artifact_root = str(settings.mlflow_artifact_root)
    s3: dict[str, Any] = {}
    if artifact_root.startswith("s3://"):
        s3 = {
            "s3_region": settings.aws_region,
            "s3_endpoint_url": settings.s3_endpoint_url,
            "aws_access_key_id": dg.EnvVar("SONOLAKE_AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": dg.EnvVar("SONOLAKE_AWS_SECRET_ACCESS_KEY"),
            "sse": settings.s3_sse,
            "sse_kms_key_id": settings.s3_sse_kms_key_id,
        }
    return ModelRegistryResource(
        tracking_uri=settings.mlflow_tracking_uri,
        model_name=settings.model_name,
        artifact_root=artifact_root,
        cache_dir=str(settings.model_cache_dir),
        ui_url=settings.mlflow_ui_url,
        **s3,
    )


def resources_for(settings: Settings) -> dict[str, Any]:
    """Every resource the definitions need, for the environment the settings name."""
    return {
        "lake": _lake_resource(settings),
        "registry": _registry_resource(settings),
        "retention": RetentionPolicy(bronze_pcm_retention_days=settings.bronze_pcm_retention_days),
        "paths": PlatformPaths(
            state_dir=str(settings.state_path),
            spool_dir=str(settings.spool_path),
            data_dir=str(settings.data_dir),
        ),
        "dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable()),
        "lifecycle": ModelLifecycleResource(
            training_preset=settings.training_preset,
            latency_budget_us=settings.promotion_latency_budget_us,
            min_improvement=settings.promotion_min_improvement,
            accuracy_floor=settings.promotion_accuracy_floor,
            min_live_segments=settings.promotion_min_live_segments,
            max_live_accuracy_loss=settings.promotion_max_live_accuracy_loss,
        ),
    }
