"""The one wiring: :class:`~sonolake.settings.Settings` → ``Lake``, ``Registry``, ``ServingEngine``.

The command line, the demo, the benchmarks and the Dagster resources build these objects here
and nowhere else, so every process opens the same lake with the same storage options and
catalog file, the same registry with the same model cache, and the same engine. Two levels:

- ``open_lake`` / ``open_registry`` take plain values. The Dagster resources call them with
  their configured fields (secrets arrive there as resolved ``EnvVar`` values, never literals);
- ``lake(settings)`` / ``registry(settings)`` / ``serving_engine(settings)`` take the settings.

Defaults that depend on the kind of lake are decided by the lake itself: a local lake keeps its
DuckDB catalog file at ``<lake>/catalog.duckdb`` (or ``SONOLAKE_CATALOG_PATH``); an object-store
lake has none (:meth:`lake_schemas.Lake.refresh_sql_catalog`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sonolake.settings import Settings

if TYPE_CHECKING:
    from lake_schemas import Lake
    from models.endpoint.server import EndpointServer
    from models.registry import Registry
    from models.remote_engine import RemoteEngine
    from models.serving import ServingEngine


def s3_storage_options(
    *,
    region: str | None,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    allow_http: bool = False,
    sse: str = "none",
    sse_kms_key_id: str | None = None,
) -> dict[str, str]:
    """delta-rs / object_store options of an S3 (or S3-compatible) lake.

    ``sse`` (``AES256`` or ``aws:kms``) makes every object the lake writes carry the
    ``x-amz-server-side-encryption`` header (and the KMS key id when one is given).
    """
    options = {"AWS_REGION": region or "us-east-1"}
    if sse != "none":
        options["AWS_SERVER_SIDE_ENCRYPTION"] = sse
    if sse_kms_key_id:
        options["AWS_SSE_KMS_KEY_ID"] = sse_kms_key_id
    if endpoint_url:
        options["AWS_ENDPOINT_URL"] = endpoint_url
    if access_key_id:
        options["AWS_ACCESS_KEY_ID"] = access_key_id
    if secret_access_key:
        options["AWS_SECRET_ACCESS_KEY"] = secret_access_key
    if allow_http:
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def storage_options(settings: Settings) -> dict[str, str]:
    """The lake's storage options: none for a local folder, S3's for an ``s3://`` lake."""
    if not settings.is_remote_lake:
        return {}
    secret = settings.aws_secret_access_key
    return s3_storage_options(
        region=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        allow_http=settings.aws_allow_http,
        sse=settings.s3_sse,
        sse_kms_key_id=settings.s3_sse_kms_key_id,
    )


def s3_put_arguments(sse: str, sse_kms_key_id: str | None) -> dict[str, str]:
    """boto3 ``put_object`` / ``upload_file`` arguments for server-side encryption."""
    if sse == "none":
        return {}
    arguments = {"ServerSideEncryption": sse}
    if sse_kms_key_id:
        arguments["SSEKMSKeyId"] = sse_kms_key_id
    return arguments


def mlflow_s3_environment(
    artifact_root: str | Path,
    *,
    region: str | None,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    sse: str = "none",
    sse_kms_key_id: str | None = None,
) -> dict[str, str]:
    """Environment MLflow's S3 artifact store reads (it takes no other configuration): the
    endpoint, the credentials and the encryption of every upload. Empty for local artifacts."""
    if not str(artifact_root).startswith("s3://"):
        return {}
    env = {"AWS_DEFAULT_REGION": region or "us-east-1"}
    if endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = endpoint_url
    if access_key_id:
        env["AWS_ACCESS_KEY_ID"] = access_key_id
    if secret_access_key:
        env["AWS_SECRET_ACCESS_KEY"] = secret_access_key
    extra = s3_put_arguments(sse, sse_kms_key_id)
    if extra:
        env["MLFLOW_S3_UPLOAD_EXTRA_ARGS"] = json.dumps(extra)
    return env


def settings_mlflow_environment(settings: Settings) -> dict[str, str]:
    """:func:`mlflow_s3_environment` of the settings."""
    secret = settings.aws_secret_access_key
    return mlflow_s3_environment(
        settings.mlflow_artifact_root,
        region=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        sse=settings.s3_sse,
        sse_kms_key_id=settings.s3_sse_kms_key_id,
    )


def open_lake(
    root: str,
    options: Mapping[str, str] | None = None,
    catalog_path: str | Path | None = None,
    *,
    compact_min_files: int | None = None,
    compact_target_mb: int | None = None,
    log_keep_commits: int | None = None,
) -> Lake:
    """The lake at ``root``: the one place a ``Lake`` is constructed.

    Lake-wide policies that come from settings (the writers' compaction, the local log's
    bound) are passed here; ``None`` keeps the lake's default.
    """
    from lake_schemas import CompactionPolicy, Lake

    policy = CompactionPolicy()
    policy = CompactionPolicy(
        min_files=policy.min_files if compact_min_files is None else compact_min_files,
        target_file_bytes=policy.target_file_bytes
        if compact_target_mb is None
        else compact_target_mb * 1024 * 1024,
        log_commits=policy.log_commits if log_keep_commits is None else log_keep_commits,
    )
    return Lake(
        root,
        storage_options=dict(options) if options else None,
        catalog_file=Path(catalog_path) if catalog_path else None,
        compaction=policy,
    )


def catalog_path(settings: Settings) -> Path | None:
    """``SONOLAKE_CATALOG_PATH`` made absolute, or None: then the lake decides (see above)."""
    return settings.catalog_path.expanduser().resolve() if settings.catalog_path else None


def lake(settings: Settings) -> Lake:
    """The lake the settings name (``SONOLAKE_LAKE_URI``, S3 options, catalog path)."""
    return open_lake(
        settings.lake_root,
        storage_options(settings),
        catalog_path(settings),
        compact_min_files=settings.lake_compact_min_files,
        compact_target_mb=settings.lake_compact_target_mb,
        log_keep_commits=settings.lake_log_keep_commits,
    )


def open_registry(
    tracking_uri: str,
    model_name: str,
    artifact_root: str | Path,
    cache_dir: str | Path,
    lake: Lake | None,
    s3_environment: dict[str, str] | None = None,
) -> Registry:
    """The registry: the one place a ``Registry`` is constructed.

    ``s3_environment`` (:func:`mlflow_s3_environment`) is put into this process's environment
    first: MLflow's S3 artifact store reads its endpoint, keys and encryption nowhere else.
    """
    from models.registry import Registry

    os.environ.update(s3_environment or {})
    return Registry(tracking_uri, model_name, artifact_root, cache_dir=Path(cache_dir), lake=lake)


def registry(settings: Settings, lake_: Lake | None = None) -> Registry:
    """The registry of the settings, recording into ``lake_`` (default: the settings' lake).

    With artifacts on S3, MLflow's S3 variables are set in this process's environment first
    (MLflow reads nothing else).
    """
    return open_registry(
        settings.mlflow_tracking_uri,
        settings.model_name,
        settings.mlflow_artifact_root,
        settings.model_cache_dir,
        lake_ if lake_ is not None else lake(settings),
        settings_mlflow_environment(settings),
    )


def registry_exists(settings: Settings) -> bool:
    """False when the tracking store is a SQLite file nobody has created yet (checking costs no
    MLflow import, and looking must not create an empty store)."""
    uri = settings.mlflow_tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def serving_engine(
    settings: Settings,
    *,
    providers: Sequence[str] | None = None,
    follow: bool = True,
    alias: str = "champion",
) -> ServingEngine:
    """The engine on ``alias`` (``champion``; the gateway also holds ``challenger``), empty
    until the alias exists, following it when ``follow``: it checks the alias every
    ``SONOLAKE_SERVING_POLL_INTERVAL_S`` and hot-swaps."""
    from models.serving import ServingEngine

    engine = ServingEngine.from_registry(
        registry(settings),
        alias,
        providers=providers,
        max_batch=settings.serving_max_batch,
        max_wait_us=settings.serving_max_wait_us,
        intra_op_threads=settings.serving_intra_op_threads,
    )
    if follow:
        engine.follow(settings.serving_poll_interval_s)
    return engine


def version_engine(settings: Settings, version: str) -> ServingEngine:
    """A warmed engine on one registered version, held as it is (it follows no alias)."""
    from models.serving import ServingEngine

    return ServingEngine.from_bundle(
        registry(settings).bundle_dir(version),
        max_batch=settings.serving_max_batch,
        max_wait_us=settings.serving_max_wait_us,
        intra_op_threads=settings.serving_intra_op_threads,
        model_version=version,
    )


def inference_endpoint(
    settings: Settings,
    *,
    host: str | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    providers: Sequence[str] | None = None,
) -> EndpointServer:
    """The Open Inference Protocol endpoint of ``sonolake serve`` (flags win over settings):
    the registered model with the versions its aliases name, one engine per version."""
    from models.endpoint.model import AudioEventClassifier, engine_for_version
    from models.endpoint.server import EndpointServer
    from models.endpoint.versions import ServedVersions

    registry_ = registry(settings)

    def load(version: str) -> ServingEngine:
        return engine_for_version(
            registry_.bundle_dir(version),
            version,
            providers=list(providers) if providers else None,
            max_batch=settings.serving_max_batch,
            max_wait_us=settings.serving_max_wait_us,
            intra_op_threads=settings.serving_intra_op_threads,
        )

    model = AudioEventClassifier(settings.model_name, ServedVersions(registry_.aliases, load))
    return EndpointServer(
        model,
        host=host or settings.serve_host,
        http_port=settings.serve_http_port if http_port is None else http_port,
        grpc_port=settings.serve_grpc_port if grpc_port is None else grpc_port,
        poll_interval_s=settings.serving_poll_interval_s,
    )


def remote_engine(settings: Settings) -> RemoteEngine:
    """The gateway's client of a remote endpoint (``SONOLAKE_INFERENCE_URL``)."""
    from models.remote_engine import RemoteEngine

    if not settings.inference_url:
        raise ValueError("SONOLAKE_INFERENCE_URL is not set")
    return RemoteEngine(
        settings.inference_url,
        model_name=settings.model_name,
        timeout_s=settings.inference_timeout_ms / 1000,
        retry_s=settings.inference_retry_s,
        max_batch=settings.serving_max_batch,
        max_wait_us=settings.serving_max_wait_us,
    )


def gateway_classifier(settings: Settings) -> ServingEngine | RemoteEngine:
    """What the gateway classifies with: the remote endpoint when ``SONOLAKE_INFERENCE_URL``
    is set, otherwise the in-process engine following ``champion``."""
    if settings.inference_url:
        return remote_engine(settings)
    return serving_engine(settings)


def bundle_dir(settings: Settings, preset: str) -> Path:
    """Where ``sonolake train`` leaves a preset's bundle (the benchmarks look there too)."""
    return settings.state_path / "models" / preset
