"""One settings object for the whole platform.

Every configurable value comes from here: environment variables with the ``SONOLAKE_`` prefix
(or a ``.env`` file), with defaults that run on one machine with no services. Packages below
the composition root (``lake_schemas``, ``features``, ``models``, ``streaming``) never read the
environment themselves; the CLI, the Dagster resources and the benchmarks build a
:class:`Settings` and pass plain values down.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""The checkout that holds this package: defaults that point at shared data hang off it."""


class Settings(BaseSettings):
    """Sonolake configuration; see the configuration table in README.md."""

    model_config = SettingsConfigDict(
        env_prefix="SONOLAKE_", env_file=".env", extra="ignore", frozen=False
    )

    environment: Literal["local", "s3"] = Field(
        "local", description="Which resource set Dagster uses: a local lake or an S3 lake."
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
        description="DuckDB catalog file for analysts (default: <lake>/catalog.duckdb for a "
        "local lake, <state_dir>/catalog.duckdb for a remote one).",
    )

    # S3 (or an S3-compatible store). Credentials are read from these variables only.
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint, e.g. a MinIO or moto URL.")
    aws_region: str = Field("us-east-1", description="S3 region.")
    aws_access_key_id: str | None = Field(None, description="S3 access key id.")
    aws_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    aws_allow_http: bool = Field(False, description="Allow plain-HTTP endpoints (test stores).")

    spool_dir: Path | None = Field(
        None, description="Durable spool of accepted chunks (default <state_dir>/spool)."
    )
    spool_retention_s: float = Field(
        3600.0, description="Sidecar: seconds a landed spool segment is kept (0: delete at once)."
    )
    sidecar_interval_s: float = Field(
        1.0, description="Sidecar: seconds between spool checks when nothing is waiting."
    )
    sidecar_max_segments_per_batch: int = Field(
        256, description="Sidecar: most spool segments landed in one micro-batch."
    )
    sidecar_crash_at: str | None = Field(
        None,
        description="Fault injection for crash tests: the sidecar kills itself (SIGKILL) at this "
        "phase, e.g. 'pipeline' or 'committed:bronze.audio_chunks'; append '@N' for batch N.",
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking/registry URI (default sqlite:///<state_dir>/mlflow.db)."
    )
    model_name: str = Field("audio-event-classifier", description="Registered model name.")
    promotion_latency_budget_us: float = Field(
        1000.0, description="Promotion gate: max batch-1 p99 latency (µs) of the CPU INT8 model."
    )
    promotion_min_improvement: float = Field(
        0.0, description="Promotion gate: accuracy the candidate must gain over the champion."
    )
    promotion_accuracy_floor: float = Field(
        0.5, description="Promotion gate: min held-out accuracy of a first champion (0..1)."
    )
    training_preset: str = Field(
        "full", description="Preset of scheduled and drift-triggered retraining (quick|full)."
    )
    serving_max_batch: int = Field(64, description="Serving: most windows per inference batch.")
    serving_max_wait_us: int = Field(
        2000, description="Serving: longest a window waits (µs) for a batch to fill."
    )
    serving_intra_op_threads: int = Field(1, description="Serving: ONNX Runtime intra-op threads.")
    serving_poll_interval_s: float = Field(
        10.0, description="Serving: how often (s) the engine checks the champion alias."
    )

    gateway_host: str = Field("127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(8765, description="Gateway port (WebSocket and HTTP).")
    auth_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API tokens, comma separated. Empty: only loopback clients, "
        "and only when allow_anonymous_loopback is true.",
    )
    allow_anonymous_loopback: bool = Field(
        True, description="Accept loopback clients without a token when no tokens are set."
    )
    gateway_max_connections: int = Field(
        1000, description="Gateway: open WebSocket connections before new ones get 1013."
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
    gateway_spool_commit_ms: float = Field(
        10.0, description="Gateway: ms a spool write waits to share its fsync (group commit)."
    )

    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data",
        description="Real recordings (Speech Commands subset, FSDD) used for training and demos.",
    )

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

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
    def catalog_file(self) -> Path:
        if self.catalog_path is not None:
            return self.catalog_path.expanduser().resolve()
        if self.is_remote_lake:
            return self.state_path / "catalog.duckdb"
        return Path(self.lake_root) / "catalog.duckdb"

    @cached_property
    def spool_path(self) -> Path:
        return (self.spool_dir or self.state_path / "spool").expanduser().resolve()

    @cached_property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @cached_property
    def mlflow_artifact_root(self) -> Path:
        return self.state_path / "mlartifacts"

    @cached_property
    def dagster_home(self) -> Path:
        return self.state_path / "dagster"

    def storage_options(self) -> dict[str, str]:
        """delta-rs / object_store options for the lake; empty for a local lake."""
        if not self.is_remote_lake:
            return {}
        options = {"AWS_REGION": self.aws_region}
        if self.s3_endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.aws_access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
        if self.aws_secret_access_key is not None:
            options["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key.get_secret_value()
        if self.aws_allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        return options


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit overrides winning (CLI flags)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
