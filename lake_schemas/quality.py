"""Data-quality rules for the lake's tables, as pure functions over Arrow data.

The rules are part of the lake's contract, next to the specs they check: the Dagster asset
checks read a table and call them, and so can anything else that wants to know whether a
table is healthy. Pure functions over hand-made Arrow tables are also what makes them easy to
test table-driven. Types are compared the way writes compare them
(:func:`lake_schemas.schema_check.same_type`), so a column the lake accepts on write is never
reported as mismatched, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.schema_check import same_type

MAX_EXAMPLES = 5
"""Offending keys quoted in a failed check's details (enough to find them, short to read)."""


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule: pass or fail, and what a person needs to act on it."""

    passed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


def schema_matches(expected: pa.Schema, actual: pa.Schema) -> RuleResult:
    """Every column of the spec is there with its type; extra columns are additive evolution.

    Nullability is not compared: Delta stores partition columns and evolved columns as
    nullable, and a nullable column holding no nulls is checked by :func:`no_nulls`.
    """
    actual_types = {f.name: f.type for f in actual}
    missing = [f.name for f in expected if f.name not in actual_types]
    mismatched = {
        f.name: f"expected {f.type}, found {actual_types[f.name]}"
        for f in expected
        if f.name in actual_types and not same_type(f.type, actual_types[f.name])
    }
    extra = sorted(set(actual_types) - set(expected.names))
    passed = not missing and not mismatched
    summary = (
        "schema matches the table spec"
        if passed
        else f"{len(missing)} missing and {len(mismatched)} mismatched columns"
    )
    return RuleResult(
        passed, summary, {"missing": missing, "mismatched": mismatched, "extra": extra}
    )


def no_nulls(data: pa.Table, columns: tuple[str, ...]) -> RuleResult:
    """No nulls in the key columns (a null key cannot be deduplicated or joined)."""
    counts = {c: data.column(c).null_count for c in columns if c in data.column_names}
    bad = {c: n for c, n in counts.items() if n}
    summary = "no nulls in key columns" if not bad else f"nulls in {', '.join(sorted(bad))}"
    return RuleResult(not bad, summary, {"null_counts": counts, "rows": data.num_rows})


def no_duplicate_keys(data: pa.Table, key: tuple[str, ...]) -> RuleResult:
    """Each primary key appears once: the sidecar lands exactly once, so any repeat is a bug."""
    if data.num_rows == 0:
        return RuleResult(True, "table is empty", {"rows": 0, "duplicate_keys": 0})
    grouped = data.select(list(key)).group_by(list(key)).aggregate([([], "count_all")])
    repeated = grouped.filter(pc.greater(grouped.column("count_all"), 1))
    examples = repeated.slice(0, MAX_EXAMPLES).to_pylist()
    passed = repeated.num_rows == 0
    summary = "every key is unique" if passed else f"{repeated.num_rows} keys appear more than once"
    return RuleResult(
        passed,
        summary,
        {"rows": data.num_rows, "duplicate_keys": repeated.num_rows, "examples": examples},
    )


def sample_rates_consistent(chunks: pa.Table, min_hz: int, max_hz: int) -> RuleResult:
    """One sample rate and encoding per session, within ``min_hz``–``max_hz``.

    ``chunks`` needs ``session_id``, ``sample_rate`` and ``encoding``. A session whose rate
    changes mid-stream would be decoded at the wrong speed; a rate outside the range was
    accepted by mistake. The range is the audio front end's (``features.pcm``), passed in:
    the lake's contract does not decide which rates the platform decodes.
    """
    if chunks.num_rows == 0:
        return RuleResult(True, "table is empty", {"sessions": 0})
    rates = chunks.column("sample_rate")
    out_of_range = pc.sum(pc.or_(pc.less(rates, min_hz), pc.greater(rates, max_hz))).as_py()
    per_session = chunks.group_by("session_id").aggregate(
        [("sample_rate", "count_distinct"), ("encoding", "count_distinct")]
    )
    mixed = per_session.filter(
        pc.or_(
            pc.greater(per_session.column("sample_rate_count_distinct"), 1),
            pc.greater(per_session.column("encoding_count_distinct"), 1),
        )
    )
    observed = sorted(set(pc.unique(rates).to_pylist()))
    passed = (out_of_range or 0) == 0 and mixed.num_rows == 0
    summary = (
        f"{per_session.num_rows} sessions, each with one format"
        if passed
        else f"{mixed.num_rows} sessions change format; {out_of_range or 0} chunks out of range"
    )
    return RuleResult(
        passed,
        summary,
        {
            "sessions": per_session.num_rows,
            "sessions_with_mixed_format": mixed.num_rows,
            "chunks_out_of_range": int(out_of_range or 0),
            "sample_rates_hz": observed,
            "examples": mixed.column("session_id").slice(0, MAX_EXAMPLES).to_pylist(),
        },
    )


def events_match_sessions(events: pa.Table, sessions: pa.Table) -> RuleResult:
    """Every event's sample rate equals its session's (events and sessions agree on format)."""
    if events.num_rows == 0 or sessions.num_rows == 0:
        return RuleResult(True, "nothing to compare yet", {"events": events.num_rows})
    joined = events.select(["event_id", "session_id", "sample_rate"]).join(
        sessions.select(["session_id", "sample_rate"]).rename_columns(
            ["session_id", "session_sample_rate"]
        ),
        "session_id",
        join_type="inner",
    )
    differ = joined.filter(
        pc.not_equal(joined.column("sample_rate"), joined.column("session_sample_rate"))
    )
    passed = differ.num_rows == 0
    summary = (
        f"{joined.num_rows} events agree with their session's rate"
        if passed
        else f"{differ.num_rows} events disagree with their session's rate"
    )
    return RuleResult(
        passed,
        summary,
        {
            "events_compared": joined.num_rows,
            "mismatched": differ.num_rows,
            "examples": differ.column("event_id").slice(0, MAX_EXAMPLES).to_pylist(),
        },
    )


def lag_within(lag_s: float, budget_s: float) -> RuleResult:
    """The oldest sealed spool segment not yet landed is younger than the budget (seconds)."""
    passed = lag_s <= budget_s
    summary = f"sidecar lag {lag_s:.1f} s {'within' if passed else 'over'} budget {budget_s:.0f} s"
    return RuleResult(passed, summary, {"lag_s": round(lag_s, 3), "budget_s": budget_s})
