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

from pydantic import Field, SecretStr, ValidationError, field_validator
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
        description="DuckDB catalog file for analysts (default: <lake>/catalog.duckdb; an "
        "s3:// lake has none, `sonolake sql` registers its tables in-process).",
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
    training_preset: Literal["quick", "full"] = Field(
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
    def spool_path(self) -> Path:
        return (self.spool_dir or self.state_path / "spool").expanduser().resolve()

    @cached_property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.state_path / 'mlflow.db'}"

    @cached_property
    def mlflow_artifact_root(self) -> Path:
        return self.state_path / "mlartifacts"

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
        name = str(problem["loc"][0]) if problem["loc"] else "?"
        raw = problem.get("input")
        value = masked_setting(name, raw) if is_secret_name(name) else mask_text(repr(raw))
        allowed = mask_text(problem["msg"].removeprefix("Value error, "))
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
