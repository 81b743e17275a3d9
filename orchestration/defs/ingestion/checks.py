"""Asset checks on the sidecar's tables; every result is also recorded in the lake's catalog.

The rules are the lake's (:mod:`lake_schemas.quality`); each check reads, calls and reports.
Per table: the schema matches the spec, key columns hold no nulls, the primary key is unique.
On bronze: each session keeps one sample rate and encoding, and the sidecar keeps up with the
spool (lag). On silver events: each event's rate agrees with its session's. Results land in
the Dagster UI (with the details as metadata) and in the catalog through
``lake.catalog.record_quality``, so analysts see them next to the table's versions.
"""

from collections.abc import Callable

import dagster as dg
import pyarrow as pa

from features.pcm import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from lake_schemas import quality
from lake_schemas.tables import AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS, TableSpec
from orchestration.defs.ingestion.assets import SIDECAR_TABLES
from orchestration.keys import table_key
from orchestration.resources import LakeResource, PlatformPaths
from streaming.spool import spool_lag_s

SIDECAR_LAG_BUDGET_S = 300.0
"""Oldest sealed-but-not-landed spool segment may be at most this old (s) before we warn."""

KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    AUDIO_CHUNKS.name: ("session_id", "seq", "device_id", "event_time", "sample_rate", "pcm"),
    AUDIO_EVENTS.name: ("event_id", "session_id", "device_id", "start_time", "end_time"),
    SESSIONS.name: ("session_id", "device_id", "started_at", "sample_rate"),
}
"""Columns whose nulls would break joins, dedup or decoding, per table (default: the key)."""


def _result(
    lake: LakeResource,
    spec: TableSpec,
    check_name: str,
    outcome: quality.RuleResult,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Record the outcome in the catalog, then hand it to Dagster."""
    lake.open().catalog.record_quality(spec.name, check_name, outcome.passed, outcome.details)
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.summary,
        metadata={k: _metadata_value(v) for k, v in outcome.details.items()},
    )


def _metadata_value(value: object) -> dg.MetadataValue:
    """Numbers stay numbers (the UI plots them across runs); containers become JSON."""
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.json(value)  # type: ignore[arg-type]


def _missing(spec: TableSpec) -> quality.RuleResult:
    """A table nothing has written yet holds no bad rows (staleness is the freshness policy's
    business, not a quality check's)."""
    return quality.RuleResult(
        True, f"{spec.name} does not exist yet: nothing has landed", {"exists": False}
    )


def _read(lake: LakeResource, spec: TableSpec, columns: list[str]) -> pa.Table | None:
    opened = lake.open()
    if not opened.exists(spec):
        return None
    return opened.read(spec, columns=columns)


def _schema_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table_key(spec),
        name="schema_matches_spec",
        description=f"{spec.name} has every column of its spec with the spec's type.",
    )
    def check(lake: LakeResource) -> dg.AssetCheckResult:
        opened = lake.open()
        if not opened.exists(spec):
            return _result(
                lake, spec, "schema_matches_spec", _missing(spec), dg.AssetCheckSeverity.WARN
            )
        outcome = quality.schema_matches(spec.schema, opened.dataset(spec).schema)
        return _result(lake, spec, "schema_matches_spec", outcome)

    return check


def _nulls_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    columns = KEY_COLUMNS.get(spec.name, spec.primary_key)

    @dg.asset_check(
        asset=table_key(spec),
        name="key_columns_not_null",
        description=f"No nulls in {', '.join(columns)}.",
    )
    def check(lake: LakeResource) -> dg.AssetCheckResult:
        data = _read(lake, spec, list(columns))
        if data is None:
            return _result(
                lake, spec, "key_columns_not_null", _missing(spec), dg.AssetCheckSeverity.WARN
            )
        return _result(lake, spec, "key_columns_not_null", quality.no_nulls(data, columns))

    return check


def _unique_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table_key(spec),
        name="primary_key_unique",
        description=f"Each ({', '.join(spec.primary_key)}) appears once: landed exactly once.",
    )
    def check(lake: LakeResource) -> dg.AssetCheckResult:
        data = _read(lake, spec, list(spec.primary_key))
        if data is None:
            return _result(
                lake, spec, "primary_key_unique", _missing(spec), dg.AssetCheckSeverity.WARN
            )
        return _result(
            lake, spec, "primary_key_unique", quality.no_duplicate_keys(data, spec.primary_key)
        )

    return check


@dg.asset_check(
    asset=table_key(AUDIO_CHUNKS),
    description="Each session keeps one sample rate and encoding, within "
    f"{MIN_SAMPLE_RATE_HZ // 1000}–{MAX_SAMPLE_RATE_HZ // 1000} kHz.",
)
def sample_rate_consistent(lake: LakeResource) -> dg.AssetCheckResult:
    data = _read(lake, AUDIO_CHUNKS, ["session_id", "sample_rate", "encoding"])
    if data is None:
        return _result(
            lake,
            AUDIO_CHUNKS,
            "sample_rate_consistent",
            _missing(AUDIO_CHUNKS),
            dg.AssetCheckSeverity.WARN,
        )
    outcome = quality.sample_rates_consistent(data, MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)
    return _result(lake, AUDIO_CHUNKS, "sample_rate_consistent", outcome)


@dg.asset_check(
    asset=table_key(AUDIO_CHUNKS),
    description=f"The sidecar lands sealed spool segments within {SIDECAR_LAG_BUDGET_S:.0f} s.",
)
def sidecar_lag(lake: LakeResource, paths: PlatformPaths) -> dg.AssetCheckResult:
    from pathlib import Path

    outcome = quality.lag_within(spool_lag_s(Path(paths.spool_dir)), SIDECAR_LAG_BUDGET_S)
    return _result(lake, AUDIO_CHUNKS, "sidecar_lag", outcome, dg.AssetCheckSeverity.WARN)


@dg.asset_check(
    asset=table_key(AUDIO_EVENTS),
    additional_deps=[table_key(SESSIONS)],
    description="Each event's sample rate equals its session's.",
)
def events_match_session_format(lake: LakeResource) -> dg.AssetCheckResult:
    events = _read(lake, AUDIO_EVENTS, ["event_id", "session_id", "sample_rate"])
    sessions = _read(lake, SESSIONS, ["session_id", "sample_rate"])
    if events is None or sessions is None:
        return _result(
            lake,
            AUDIO_EVENTS,
            "events_match_session_format",
            _missing(AUDIO_EVENTS),
            dg.AssetCheckSeverity.WARN,
        )
    return _result(
        lake,
        AUDIO_EVENTS,
        "events_match_session_format",
        quality.events_match_sessions(events, sessions),
    )


_FACTORIES: tuple[Callable[[TableSpec], dg.AssetChecksDefinition], ...] = (
    _schema_check,
    _nulls_check,
    _unique_check,
)

table_checks = [factory(spec) for spec in SIDECAR_TABLES for factory in _FACTORIES]
