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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sonolake.settings import Settings

if TYPE_CHECKING:
    from lake_schemas import Lake
    from models.registry import Registry
    from models.serving import ServingEngine


def s3_storage_options(
    *,
    region: str | None,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    allow_http: bool = False,
) -> dict[str, str]:
    """delta-rs / object_store options of an S3 (or S3-compatible) lake."""
    options = {"AWS_REGION": region or "us-east-1"}
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
    )


def open_lake(
    root: str,
    options: Mapping[str, str] | None = None,
    catalog_path: str | Path | None = None,
    *,
    compact_min_files: int | None = None,
    compact_target_mb: int | None = None,
) -> Lake:
    """The lake at ``root``: the one place a ``Lake`` is constructed.

    Lake-wide policies that come from settings (the writers' compaction) are passed here;
    ``None`` keeps the lake's default.
    """
    from lake_schemas import CompactionPolicy, Lake

    policy = CompactionPolicy()
    policy = CompactionPolicy(
        min_files=policy.min_files if compact_min_files is None else compact_min_files,
        target_file_bytes=policy.target_file_bytes
        if compact_target_mb is None
        else compact_target_mb * 1024 * 1024,
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
    )


def open_registry(
    tracking_uri: str,
    model_name: str,
    artifact_root: str | Path,
    cache_dir: str | Path,
    lake: Lake | None,
) -> Registry:
    """The registry: the one place a ``Registry`` is constructed."""
    from models.registry import Registry

    return Registry(tracking_uri, model_name, artifact_root, cache_dir=Path(cache_dir), lake=lake)


def registry(settings: Settings, lake_: Lake | None = None) -> Registry:
    """The registry of the settings, recording into ``lake_`` (default: the settings' lake)."""
    return open_registry(
        settings.mlflow_tracking_uri,
        settings.model_name,
        settings.mlflow_artifact_root,
        settings.model_cache_dir,
        lake_ if lake_ is not None else lake(settings),
    )


def registry_exists(settings: Settings) -> bool:
    """False when the tracking store is a SQLite file nobody has created yet (checking costs no
    MLflow import, and looking must not create an empty store)."""
    uri = settings.mlflow_tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def serving_engine(
    settings: Settings, *, providers: Sequence[str] | None = None, follow: bool = True
) -> ServingEngine:
    """The engine on the ``champion`` alias (empty until one exists), following it when
    ``follow``: it checks the alias every ``SONOLAKE_SERVING_POLL_INTERVAL_S`` and hot-swaps."""
    from models.serving import ServingEngine

    engine = ServingEngine.from_registry(
        registry(settings),
        providers=providers,
        max_batch=settings.serving_max_batch,
        max_wait_us=settings.serving_max_wait_us,
        intra_op_threads=settings.serving_intra_op_threads,
    )
    if follow:
        engine.follow(settings.serving_poll_interval_s)
    return engine


def bundle_dir(settings: Settings, preset: str) -> Path:
    """Where ``sonolake train`` leaves a preset's bundle (the benchmarks look there too)."""
    return settings.state_path / "models" / preset
