"""`sonolake catalog` and `sonolake sql`, in-process through ``main`` and as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

from lake_schemas import AUDIO_EVENTS, SESSIONS, Lake
from sonolake import wiring
from sonolake.cli import main
from sonolake.commands.lake import referenced_tables
from sonolake.settings import Settings


@pytest.fixture
def populated(settings: Settings, make_events) -> Lake:
    """The lake the settings point at: events v1 (6 rows), v2 (12 rows) over 2 days."""
    lake = wiring.lake(settings)
    lake.append(AUDIO_EVENTS, make_events(6, days=2), writer="sidecar")
    lake.append(AUDIO_EVENTS, make_events(6, start=6, days=2), writer="sidecar")
    return lake


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_catalog_lists_tables_as_json_and_table(populated: Lake, capsys) -> None:
    code, out, _ = _run(capsys, "catalog", "--format", "json")
    assert code == 0
    rows = {row["table"]: row for row in json.loads(out)}
    events = rows[AUDIO_EVENTS.name]
    assert (events["layer"], events["rows"], events["version"]) == ("silver", 12, 2)
    assert events["last_writer"] == "sidecar"
    assert events["location"] == populated.uri(AUDIO_EVENTS)
    assert rows[SESSIONS.name]["created"] is False and rows[SESSIONS.name]["version"] is None
    code, out, _ = _run(capsys, "catalog")
    assert code == 0 and "silver.audio_events" in out and "not created" in out


def test_sql_formats(populated: Lake, capsys) -> None:
    query = "SELECT event_date, count(*) AS n FROM silver.audio_events GROUP BY 1 ORDER BY 1"
    code, out, _ = _run(capsys, "sql", query, "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"event_date": "2024-03-01", "n": 6},
        {"event_date": "2024-03-02", "n": 6},
    ]
    code, out, _ = _run(capsys, "sql", query, "--format", "csv")
    assert list(csv.reader(io.StringIO(out))) == [
        ["event_date", "n"],
        ["2024-03-01", "6"],
        ["2024-03-02", "6"],
    ]
    code, out, _ = _run(capsys, "sql", query)
    assert code == 0 and "2024-03-02" in out and "2 row(s)" in out


def test_sql_time_travel(populated: Lake, capsys) -> None:
    count = "SELECT count(*) AS n FROM silver.audio_events"
    assert json.loads(_run(capsys, "sql", count, "-f", "json", "--as-of-version", "1")[1]) == [
        {"n": 6}
    ]
    assert json.loads(
        _run(capsys, "sql", count, "-f", "json", "--as-of-version", "silver.audio_events=0")[1]
    ) == [{"n": 0}]
    join = (
        "SELECT (SELECT count(*) FROM silver.audio_events) AS events, "
        "(SELECT count(*) FROM silver.sessions) AS sessions"
    )
    code, _, err = _run(capsys, "sql", join, "--as-of-version", "1")
    assert code == 2 and "TABLE=N" in err  # two tables named: a bare N is ambiguous
    code, out, _ = _run(
        capsys, "sql", join, "-f", "json", "--as-of-version", "silver.audio_events=1"
    )
    assert code == 0 and json.loads(out) == [{"events": 6, "sessions": 0}]
    code, _, err = _run(capsys, "sql", count, "--as-of-version", "silver.audio_events=99")
    assert code == 2 and "99" in err
    code, _, err = _run(capsys, "sql", count, "--as-of-version", "silver.nope=1")
    assert code == 2 and "silver.nope" in err


def test_sql_bad_input_exits_2_with_duckdbs_message(populated: Lake, capsys) -> None:
    code, _, err = _run(capsys, "sql", "SELEC * FROM silver.audio_events")
    assert code == 2 and "syntax error" in err
    code, _, err = _run(capsys, "sql", "SELECT * FROM silver.audio_event")
    assert (
        code == 2
        and "does not exist" in err
        and "silver.audio_events" in err
        and "bronze.audio_chunks" in err
    )


def test_sql_in_a_subprocess_as_an_analyst_runs_it(populated: Lake, settings: Settings) -> None:
    env = {**os.environ, "SONOLAKE_LAKE_URI": settings.lake_root}
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "sonolake",
            "sql",
            "SELECT count(*) AS n FROM silver.audio_events",
            "-f",
            "json",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == [{"n": 12}]


@pytest.mark.s3
@pytest.mark.integration
def test_sql_on_an_s3_lake(s3_store, make_events, monkeypatch, capsys) -> None:
    root = s3_store.fresh_root()
    Lake(root, s3_store.storage_options).append(
        AUDIO_EVENTS, make_events(4, days=2), writer="sidecar"
    )
    for name in list(os.environ):
        if name.startswith("SONOLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SONOLAKE_LAKE_URI", root)
    monkeypatch.setenv("SONOLAKE_S3_ENDPOINT_URL", s3_store.endpoint)
    monkeypatch.setenv("SONOLAKE_AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("SONOLAKE_AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SONOLAKE_AWS_ALLOW_HTTP", "true")
    code, out, err = _run(
        capsys,
        "sql",
        "SELECT event_date, count(*) AS n FROM silver.audio_events GROUP BY 1 ORDER BY 1",
        "-f",
        "json",
    )
    assert code == 0, err
    assert json.loads(out) == [
        {"event_date": "2024-03-01", "n": 2},
        {"event_date": "2024-03-02", "n": 2},
    ]
    code, out, _ = _run(capsys, "catalog", "-f", "json")
    assert {row["table"]: row["rows"] for row in json.loads(out)}[AUDIO_EVENTS.name] == 4


def _lake_files(lake: Lake) -> set[str]:
    return {str(p) for p in Path(lake.root).rglob("*") if p.is_file()}


REFUSED: list[tuple[str, str]] = [
    ("COPY (SELECT * FROM silver.audio_events) TO '{target}'", "COPY"),
    ("COPY (SELECT 1) TO '{lake}/silver/audio_events/x.parquet'", "COPY"),
    ("ATTACH '{target}' AS other", "ATTACH"),
    ("CREATE TABLE t AS SELECT * FROM silver.audio_events", "CREATE"),
    ("INSTALL delta", "not allowed"),
    ("SET threads = 1", "not allowed"),
    ("SELECT 1; COPY (SELECT 1) TO '{target}'", "exactly one"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("", "exactly one"),
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
    ("SELECT * FROM read_text('{passwd}')", "disabled"),
    ("SELECT * FROM glob('{lake}/**')", "disabled"),
    ("SELECT * FROM read_parquet('{lake}/_catalog/**/*.parquet')", "disabled"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}'", "not allowed"),
    ("SELECT * FROM query('COPY (SELECT 1) TO ''{target}''')", "SELECT"),
]
"""Writes, other files, settings, extensions, several statements: each refused with exit 2."""


def test_sql_is_read_only(populated: Lake, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out.csv"
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0\n")
    before = _lake_files(populated)
    for query, says in REFUSED:
        text = query.format(target=target, lake=populated.root, passwd=passwd)
        code, out, err = _run(capsys, "sql", text)
        assert code == 2, (text, out)
        assert says in err and "root:x" not in out + err, (text, err)
        assert not target.exists(), text
        assert _lake_files(populated) == before, text  # nothing written into the lake


def test_sql_reads_and_explains(populated: Lake, capsys) -> None:
    for query in (
        "WITH e AS (FROM silver.audio_events) SELECT count(*) AS n FROM e",
        "SELECT count(*) AS n FROM silver.audio_events;",
    ):
        code, out, err = _run(capsys, "sql", query, "-f", "json")
        assert code == 0, err
        assert json.loads(out) == [{"n": 12}]
    code, out, err = _run(capsys, "sql", "EXPLAIN SELECT count(*) FROM silver.audio_events")
    assert code == 0, err
    code, out, err = _run(capsys, "sql", "DESCRIBE silver.audio_events", "-f", "json")
    assert code == 0 and [row["column_name"] for row in json.loads(out)][-1] == "event_date"


def test_sql_version_past_the_end_says_which_exist(populated: Lake, capsys) -> None:
    count = "SELECT count(*) FROM silver.audio_events"
    code, _, err = _run(capsys, "sql", count, "--as-of-version", "3")
    assert code == 2
    assert "silver.audio_events has no version 3; it has versions 0–2" in err
    assert "LogSegment" not in err


def test_time_travel_finds_tables_joined_with_using(populated: Lake, settings, capsys) -> None:
    lake = wiring.lake(settings)
    lake.ensure(SESSIONS, writer="sidecar")
    join = (
        "SELECT count(*) AS n FROM silver.audio_events e JOIN silver.sessions s USING (session_id)"
    )
    code, _, err = _run(capsys, "sql", join, "--as-of-version", "1")
    assert code == 2 and "silver.audio_events, silver.sessions" in err and "TABLE=N" in err
    single = (
        "SELECT count(*) AS n FROM silver.audio_events a "
        "JOIN silver.audio_events b USING (event_id)"
    )
    code, out, err = _run(capsys, "sql", single, "--as-of-version", "1", "-f", "json")
    assert code == 0, err
    assert json.loads(out) == [{"n": 6}]


def test_referenced_tables_from_the_parse_tree() -> None:
    known = {"silver.audio_events", "silver.sessions", "bronze.audio_chunks"}
    query = (
        "WITH recent AS (SELECT * FROM silver.audio_events) SELECT * FROM recent "
        "JOIN silver.sessions USING (session_id) "
        "WHERE session_id IN (SELECT session_id FROM bronze.audio_chunks)"
    )
    assert referenced_tables(query, known) == known
    assert referenced_tables("SELEC nonsense", known) == set()
    assert referenced_tables('SELECT * FROM "silver"."sessions"', known) == {"silver.sessions"}
