"""The lake's data-quality rules (behind the sidecar tables' checks), table-driven on Arrow."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lake_schemas import quality
from lake_schemas.schema_check import same_type


def _chunks(rows: list[tuple[str, int, str]]) -> pa.Table:
    return pa.table(
        {
            "session_id": [r[0] for r in rows],
            "sample_rate": pa.array([r[1] for r in rows], pa.int32()),
            "encoding": [r[2] for r in rows],
        }
    )


@pytest.mark.parametrize(
    ("expected", "actual", "passed", "missing", "mismatched"),
    [
        ([("a", pa.string())], [("a", pa.large_string())], True, [], []),
        ([("a", pa.string())], [("a", pa.string()), ("b", pa.int64())], True, [], []),
        ([("a", pa.string()), ("b", pa.int32())], [("a", pa.string())], False, ["b"], []),
        ([("a", pa.int32())], [("a", pa.int64())], False, [], ["a"]),
        (
            [("t", pa.timestamp("us", tz="UTC"))],
            [("t", pa.timestamp("ns", tz="UTC"))],
            False,
            [],
            ["t"],
        ),
        ([("l", pa.list_(pa.float32()))], [("l", pa.large_list(pa.float32()))], True, [], []),
        (
            [("t", pa.timestamp("us", tz="UTC"))],
            [("t", pa.timestamp("us", tz="Europe/Paris"))],
            False,
            [],
            ["t"],
        ),
        (
            [("t", pa.timestamp("us", tz="UTC"))],
            [("t", pa.timestamp("us", tz="+00:00"))],
            True,
            [],
            [],
        ),
    ],
)
def test_schema_matches(expected, actual, passed, missing, mismatched) -> None:  # type: ignore[no-untyped-def]
    outcome = quality.schema_matches(pa.schema(expected), pa.schema(actual))
    # one notion of "the same type" for the check and for writes
    assert all(
        same_type(e, dict(actual)[n]) == (n not in mismatched)
        for n, e in expected
        if n in dict(actual)
    )
    assert outcome.passed is passed
    assert outcome.details["missing"] == missing
    assert sorted(outcome.details["mismatched"]) == mismatched


@pytest.mark.parametrize(
    ("values", "passed"),
    [([1, 2, 3], True), ([1, None, 3], False), ([], True)],
)
def test_no_nulls(values: list[int | None], passed: bool) -> None:
    table = pa.table(
        {"k": pa.array(values, pa.int64()), "other": pa.array([None] * len(values), pa.int64())}
    )
    outcome = quality.no_nulls(table, ("k",))
    assert outcome.passed is passed
    assert "other" not in outcome.details["null_counts"], "only the key columns are checked"


@pytest.mark.parametrize(
    ("keys", "duplicates"),
    [
        ([("s1", 0), ("s1", 1), ("s2", 0)], 0),
        ([("s1", 0), ("s1", 0), ("s2", 0)], 1),
        ([("s1", 0), ("s1", 0), ("s1", 0), ("s2", 1), ("s2", 1)], 2),
    ],
)
def test_no_duplicate_keys(keys: list[tuple[str, int]], duplicates: int) -> None:
    table = pa.table({"session_id": [k[0] for k in keys], "seq": [k[1] for k in keys]})
    outcome = quality.no_duplicate_keys(table, ("session_id", "seq"))
    assert outcome.passed is (duplicates == 0)
    assert outcome.details["duplicate_keys"] == duplicates
    assert len(outcome.details["examples"]) == duplicates


@pytest.mark.parametrize(
    ("rows", "passed", "mixed", "out_of_range"),
    [
        ([("a", 16000, "linear16"), ("a", 16000, "linear16"), ("b", 8000, "mulaw")], True, 0, 0),
        ([("a", 16000, "linear16"), ("a", 8000, "linear16")], False, 1, 0),
        ([("a", 16000, "linear16"), ("a", 16000, "mulaw")], False, 1, 0),
        ([("a", 4000, "linear16")], False, 0, 1),
        ([("a", 96000, "linear16")], False, 0, 1),
    ],
)
def test_sample_rates_consistent(rows, passed, mixed, out_of_range) -> None:  # type: ignore[no-untyped-def]
    outcome = quality.sample_rates_consistent(_chunks(rows), 8000, 48000)
    assert outcome.passed is passed
    assert outcome.details["sessions_with_mixed_format"] == mixed
    assert outcome.details["chunks_out_of_range"] == out_of_range


def test_events_match_sessions() -> None:
    sessions = pa.table(
        {"session_id": ["a", "b"], "sample_rate": pa.array([16000, 8000], pa.int32())}
    )
    good = pa.table(
        {
            "event_id": ["e1", "e2"],
            "session_id": ["a", "b"],
            "sample_rate": pa.array([16000, 8000], pa.int32()),
        }
    )
    bad = pa.table(
        {
            "event_id": ["e1", "e2"],
            "session_id": ["a", "b"],
            "sample_rate": pa.array([16000, 16000], pa.int32()),
        }
    )
    assert quality.events_match_sessions(good, sessions).passed
    outcome = quality.events_match_sessions(bad, sessions)
    assert not outcome.passed and outcome.details["examples"] == ["e2"]


@pytest.mark.parametrize(
    ("lag", "budget", "passed"), [(0.0, 300.0, True), (300.0, 300.0, True), (301.0, 300.0, False)]
)
def test_lag_within(lag: float, budget: float, passed: bool) -> None:
    assert quality.lag_within(lag, budget).passed is passed
