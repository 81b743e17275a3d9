"""`sonolake catalog` and `sonolake sql`, in-process through ``main`` and as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from support import REPO_ROOT

from lake_schemas import AUDIO_EVENTS, SESSIONS, Lake
from sonolake import wiring
from sonolake.cli import main
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
