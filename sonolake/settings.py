"""One settings object for the whole platform.

Every configurable value comes from here: environment variables with the ``SONOLAKE_`` prefix
(or a ``.env`` file), with defaults that run on one machine with no services. Packages below
the composition root (``lake_schemas``, ``features``, ``models``, ``streaming``) never read the
environment themselves; :mod:`sonolake.wiring` turns a :class:`Settings` into the objects they
offer. Settings are checked when they are read (:func:`get_settings`): a bad value stops the
command with one line per problem, naming the variable, the value and what is allowed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sonolake.errors import BadInput
from sonolake.secrets import is_secret_name, mask_text, masked_setting

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout that holds this package: defaults that point at shared data hang off it."""


class Settings(BaseSettings):
    """Sonolake configuration; see the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix="SONOLAKE_", env_file=".env", extra="ignore", frozen=False
    )

    environment: Literal["local", "s3", "postgres"] = Field(
        "local",
        description="Which resource set Dagster uses: a local lake, an S3 lake, or 'postgres' "
        "(more than one machine: S3 lake, Dagster and MLflow on Postgres, artifacts on S3).",
    )
    state_dir: Path = Field(
        Path(".sonolake"),
        description="Local state: Dagster home, MLflow store, spool, demo logs.",
    )
    lake_uri: str = Field(
        "./lakehouse", description="Root of the Delta lake: a local folder or an s3:// URI."
    )
    catalog_path: Path | None = Field(
        None,
        description="DuckDB catalog file for analysts (default: <lake>/catalog.duckdb; an "
        "s3:// lake has none, `sonolake sql` registers its tables in-process).",
    )
    lake_compact_min_files: int = Field(
        32,
        ge=0,
        description="A table's writer compacts a partition it wrote once it holds this many "
        "files under half the target (0: only the nightly maintenance compacts).",
    )
    lake_log_keep_commits: int | None = Field(
        None,
        ge=0,
        description="Commits a local lake table's log keeps for time travel; older entries "
        "are removed after a checkpoint (default: the lake's 200, ~3 minutes at one sidecar "
        "batch a second, each 1,000 more costing ~10 ms per commit; 0: keep by Delta's 7-day "
        "time retention alone). s3:// lakes ignore it.",
    )
    lake_compact_target_mb: int = Field(
        16, ge=1, le=1024, description="Target file size of the writer's compaction (MB)."
    )

    # S3 (or an S3-compatible store). Credentials are read from these variables only.
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint, e.g. a MinIO or moto URL.")
    aws_region: str = Field("us-east-1", description="S3 region.")
    aws_access_key_id: str | None = Field(None, description="S3 access key id.")
    aws_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    aws_allow_http: bool = Field(False, description="Allow plain-HTTP endpoints (test stores).")
    s3_sse: Literal["none", "AES256", "aws:kms"] = Field(
        "none",
        description="Server-side encryption of every object written to S3 (lake, reports, "
        "MLflow artifacts): none, AES256 (SSE-S3) or aws:kms (SSE-KMS).",
    )
    s3_sse_kms_key_id: str | None = Field(
        None, description="KMS key id or ARN for aws:kms (default: the bucket's AWS managed key)."
    )
    dagster_postgres_url: SecretStr | None = Field(
        None,
        description="postgres environment: Dagster run, event and schedule storage, e.g. "
        "postgresql+psycopg2://user:pw@host:5432/dagster.",
    )
    mlflow_artifacts_uri: str | None = Field(
        None,
        description="Where new MLflow experiments keep artifacts, e.g. s3://bucket/mlflow "
        "(default <state_dir>/mlartifacts).",
    )
    bronze_pcm_retention_days: int = Field(
        30, ge=1, description="Days raw PCM stays in bronze.audio_chunks (by ingest date)."
    )
    sidecar_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Sidecar: port of its Prometheus /metrics (off: unset)."
    )

    spool_dir: Path | None = Field(
        None, description="Durable spool of accepted chunks (default <state_dir>/spool)."
    )
    spool_retention_s: float = Field(
        3600.0, description="Sidecar: seconds a landed spool segment is kept (0: delete at once)."
    )
    sidecar_interval_s: float = Field(
        1.0, description="Sidecar: seconds between spool checks when nothing is waiting."
    )
    sidecar_store_retry_s: float = Field(
        300.0,
        ge=0,
        description="Sidecar: seconds a batch keeps being retried (jittered back-off up to 5 s) "
        "while the lake's object store is unavailable, before the sidecar gives up (0: no retry).",
    )
    sidecar_max_segments_per_batch: int = Field(
        256, description="Sidecar: most spool segments landed in one micro-batch."
    )
    sidecar_max_batch_bytes: int = Field(
        256 * 1024 * 1024,
        description="Sidecar: most spool bytes landed in one micro-batch (batches grow with "
        "the backlog up to this; at least one segment).",
    )
    sidecar_pipeline_ahead: bool = Field(
        True,
        description="Sidecar: run the next micro-batch's pipeline while a batch commits (uses a "
        "second core and the memory of two batches; off: one batch at a time).",
    )
    sidecar_crash_at: str | None = Field(
        None,
        description="Fault injection for crash tests: the sidecar kills itself (SIGKILL) at this "
        "phase, e.g. 'pipeline' or 'committed:bronze.audio_chunks'; append '@N' for batch N.",
    )
    sidecar_runner: Literal["in-process", "dask"] = Field(
        "in-process",
        description="Sidecar: where each micro-batch's Beam pipeline runs: in the sidecar's "
        "process, or on the Dask cluster at SONOLAKE_DASK_SCHEDULER.",
    )
    dask_scheduler: str | None = Field(
        None,
        description="Dask scheduler address, tcp://HOST:PORT: the sidecar's `dask` runner and "
        "Dagster's `dask` executor submit their work there.",
    )
    dask_partitions: int = Field(
        4, ge=1, description="Sidecar on Dask: partitions (and session shards) of a micro-batch."
    )
    dagster_executor: Literal["in-process", "multiprocess", "dask"] = Field(
        "multiprocess",
        description="Dagster: how job steps run: one process, a process per step (Dagster's "
        "default), or as tasks on the Dask cluster at SONOLAKE_DASK_SCHEDULER.",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking/registry URI (default sqlite:///<state_dir>/mlflow.db)."
    )
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000",
        description="Where the MLflow UI serves this store (`mlflow ui`, a proxy, a hosted "
        "server): the base of the run, model and report links in the Dagster UI.",
    )
    model_name: str = Field("audio-event-classifier", description="Registered model name.")
    promotion_latency_budget_us: float = Field(
        20_000.0, description="Promotion gate: max batch-1 p99 latency (µs) of the CPU INT8 model."
    )
    promotion_min_improvement: float = Field(
        0.0, description="Promotion gate: accuracy the candidate must gain over the champion."
    )
    promotion_accuracy_floor: float = Field(
        0.5, description="Promotion gate: min held-out accuracy of a first champion (0..1)."
    )
    promotion_min_live_segments: int = Field(
        0,
        ge=0,
        description="Promotion gate: least labelled live segments shadow-scored (0: not needed).",
    )
    promotion_max_live_accuracy_loss: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Promotion gate: most live accuracy (0..1) the candidate may lose vs the "
        "champion.",
    )
    training_preset: Literal["quick", "full", "embedding"] = Field(
        "embedding",
        description="Preset of scheduled and drift-triggered retraining (embedding|full|quick).",
    )
    serving_max_batch: int = Field(64, description="Serving: most windows per inference batch.")
    serving_max_wait_us: int = Field(
        2000, description="Serving: longest a window waits (µs) for a batch to fill."
    )
    serving_intra_op_threads: int = Field(1, description="Serving: ONNX Runtime intra-op threads.")
    serving_poll_interval_s: float = Field(
        10.0, description="Serving: how often (s) the engine checks the champion alias."
    )

    serve_host: str = Field("127.0.0.1", description="Inference endpoint bind address.")
    serve_http_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="Inference endpoint HTTP/REST port (Open Inference Protocol).",
    )
    serve_grpc_port: int = Field(
        8081, ge=0, le=65535, description="Inference endpoint gRPC port (Open Inference Protocol)."
    )
    inference_url: str | None = Field(
        None,
        description="Gateway: classify on this endpoint's gRPC port (host:port or "
        "grpc://host:port) instead of in-process.",
    )
    inference_timeout_ms: float = Field(
        250.0, gt=0, description="Gateway: longest wait (ms) for the endpoint before a miss."
    )
    inference_retry_s: float = Field(
        1.0, ge=0, description="Gateway: seconds after a failed call that windows miss at once."
    )

    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(
        8765, ge=0, le=65535, description="Gateway port (WebSocket and HTTP)."
    )
    auth_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API tokens, comma separated. Empty: only loopback clients, "
        "and only when allow_anonymous_loopback is true.",
    )
    allow_anonymous_loopback: bool = Field(
        True, description="Accept loopback clients without a token when no tokens are set."
    )
    gateway_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Gateway, anonymous loopback mode: browser origins allowed besides the "
        "gateway's own page, comma separated (e.g. http://localhost:3000).",
    )
    gateway_max_sessions: int = Field(
        1000, ge=1, description="Gateway: sessions open or resumable before new ones get 1013."
    )
    gateway_max_sessions_per_credential: int = Field(
        1000, ge=1, description="Gateway: sessions one token may hold before new ones get 1008."
    )
    gateway_max_spool_queue_bytes: int = Field(
        1048576,
        ge=1,
        description="Gateway: audio bytes per session waiting for the spool before its socket "
        "is paused.",
    )
    gateway_rate_audio_s_per_s: float = Field(
        10.0,
        gt=0,
        description="Gateway: sustained audio per session in audio-seconds per second "
        "(faster senders are slowed down).",
    )
    gateway_rate_burst_audio_s: float = Field(
        60.0, gt=0, description="Gateway: audio-seconds a session may send at once (catch-up)."
    )
    gateway_metrics_token: SecretStr | None = Field(
        None, description="Gateway: when set, /metrics needs 'Authorization: Bearer <token>'."
    )
    gateway_certfile: Path | None = Field(
        None, description="Gateway: PEM certificate chain; serve wss:// and https://."
    )
    gateway_keyfile: Path | None = Field(
        None, description="Gateway: PEM private key of gateway_certfile."
    )
    gateway_max_frame_bytes: int = Field(
        131072, description="Gateway: largest audio frame in bytes (bigger: close 1009)."
    )
    gateway_idle_timeout_s: float = Field(
        10.0, description="Gateway: seconds without audio or KeepAlive before a close."
    )
    gateway_max_pending_ms: int = Field(
        2000, description="Gateway: unprocessed audio (ms) per session before the oldest drops."
    )
    gateway_interim_interval_ms: int = Field(
        250, description="Gateway: least speech (ms) between two interim results."
    )
    gateway_resume_window_s: float = Field(
        60.0, description="Gateway: seconds a disconnected session stays resumable."
    )
    gateway_serve_model: bool = Field(
        True, description="Gateway: follow the champion model (false: VAD and segments only)."
    )
    gateway_workers: int = Field(
        0,
        ge=0,
        description="Gateway: worker processes on the port (SO_REUSEPORT); 0: one per CPU core, "
        "1: a single process.",
    )
    gateway_spool_commit_ms: float = Field(
        10.0, description="Gateway: ms a spool write waits to share its fsync (group commit)."
    )
    gateway_shadow_windows_per_s: float = Field(
        20.0,
        ge=0,
        description="Gateway: shadow scoring's CPU budget, challenger windows (1 s) per second "
        "(0: off).",
    )
    gateway_shadow_queue: int = Field(
        32, ge=1, description="Gateway: segments waiting for the challenger before drops."
    )
    gateway_held_versions: int = Field(
        2,
        ge=0,
        description="Gateway: most model versions besides champion and challenger loaded at "
        "once for sessions that name one (model=<version>); 0: those get the champion.",
    )

    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data",
        description="Real recordings (Speech Commands subset, FSDD) used for training and demos.",
    )

    @field_validator("dask_scheduler")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, sep, rest = value.partition("://")
        host, colon, port = rest.rpartition(":")
        if not (sep and scheme in ("tcp", "tls") and host and colon and port.isdigit()):
            raise ValueError("must look like tcp://HOST:PORT (or tls://HOST:PORT)")
        return value

    @model_validator(mode="after")
    def _check_profiles(self) -> Settings:
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id is set but s3_sse is not aws:kms; set both")
        if self.environment == "postgres":
            missing = [
                name
                for name, ok in (
                    ("SONOLAKE_DAGSTER_POSTGRES_URL", self.dagster_postgres_url is not None),
                    (
                        "SONOLAKE_MLFLOW_URI=postgresql+psycopg2://… (or an MLflow server on it)",
                        (self.mlflow_uri or "").startswith(("postgresql", "http://", "https://")),
                    ),
                    ("SONOLAKE_LAKE_URI=s3://…", self.is_remote_lake),
                )
                if not ok
            ]
            if missing:
                raise ValueError("the postgres environment needs " + ", ".join(missing))
        return self

    @field_validator("auth_tokens", "gateway_allowed_origins", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        cert, key = self.gateway_certfile, self.gateway_keyfile
        if key is not None and cert is None:
            raise ValueError("gateway_keyfile needs gateway_certfile (the certificate chain)")
        for name, path in (("gateway_certfile", cert), ("gateway_keyfile", key)):
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    # Derived locations. Relative paths are resolved against the working directory once, so
    # every process started from the same place agrees on them.
    @cached_property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def is_remote_lake(self) -> bool:
        return "://" in self.lake_uri and not self.lake_uri.startswith("file://")

    @cached_property
    def lake_root(self) -> str:
        """The lake root as delta-rs wants it: an absolute local path or a URI."""
        if self.is_remote_lake:
            return self.lake_uri.rstrip("/")
        return str(Path(self.lake_uri.removeprefix("file://")).expanduser().resolve())

    @cached_property
    def spool_path(self) -> Path:
        return (self.spool_dir or self.state_path / "spool").expanduser().resolve()

    @cached_property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @cached_property
    def mlflow_artifact_root(self) -> Path | str:
        """A local folder, or the ``SONOLAKE_MLFLOW_ARTIFACTS_URI`` (``s3://…``)."""
        return self.mlflow_artifacts_uri or self.state_path / "mlartifacts"

    @cached_property
    def model_cache_dir(self) -> Path:
        """Registered bundles, downloaded once and shared by the CLI, Dagster and the gateway."""
        return self.state_path / "model-cache"

    @cached_property
    def dagster_home(self) -> Path:
        return self.state_path / "dagster"


class BadSettings(BadInput):
    """One or more settings have values that cannot be used (exit code 2)."""


def describe_errors(error: ValidationError) -> str:
    """One line per bad setting: the variable, the value and what is allowed."""
    lines = []
    for problem in error.errors():
        allowed = mask_text(problem["msg"].removeprefix("Value error, "))
        if not problem["loc"]:  # a rule across settings: its input is all of them, never shown
            lines.append(f"settings are not allowed together: {allowed}")
            continue
        name = str(problem["loc"][0])
        raw = problem.get("input")
        value = masked_setting(name, raw) if is_secret_name(name) else mask_text(repr(raw))
        lines.append(f"SONOLAKE_{name.upper()}={value} is not allowed: {allowed}")
    return "\n".join(lines)


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit overrides winning (CLI flags).

    Raises :class:`BadSettings` (a :class:`~sonolake.errors.BadInput`) listing every bad value.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise BadSettings(describe_errors(exc)) from None
