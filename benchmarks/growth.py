"""``growth``: does the lake stay fast as it grows? Commits at the sidecar's shape and cadence.

Each commit is one sidecar micro-batch, landed through the ``Lake`` exactly as the sidecar lands
it (catalog on, the DuckDB catalog file refreshed once per batch): an append of raw chunks to
``bronze.audio_chunks`` (``CHUNKS_PER_COMMIT`` chunks of 100 ms PCM16, 3,200 bytes each), an
append of events to ``silver.audio_events`` and an upsert of the batch's sessions into
``silver.sessions``, each with the batch's app transaction. A simulated clock advances one
second per batch from just before midnight, so commits go to one date partition, cross into
the next day after ``MIDNIGHT_AFTER`` batches, and the first ones after midnight still carry a
few events of the day before.

At each mark (100, 1,000 and, in the full run, 10,000 commits) it records, for the last
``WINDOW`` batches before the mark: the append p50/p99 (ms, one table's commit with everything
after it, and its share of the batch's one metadata catalog commit), the catalog-file refresh
(ms), the files per table and the entries of each local ``_delta_log`` (bounded by the
owner: ``CompactionPolicy.log_commits``), and the analyst query suite through the catalog
file (a read-only DuckDB connection, as an analyst opens it).

Baseline in the same run: at the last mark the same rows are written once into a fresh lake
(the table compacted), and the query suite runs there. Ratios:

- ``append_growth`` = append p50 at the last mark ÷ at 100 commits (goal ≤ 1.2); wall time,
  so a busy neighbour moves it: ``batch_cpu_growth`` (the same for the CPU time of a whole
  batch, all threads of this process) is the steadier figure;
- ``query_vs_compacted`` = query-suite p50 at the last mark ÷ on the compacted lake (goal ≤ 1.5).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from benchmarks.harness import BenchResult, percentiles, progress
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS, Lake, TableSpec, delta
from lake_schemas.catalog import TABLE_VERSIONS
from models.dataset import LABELS
from sonolake import wiring

QUICK_MARKS = (100, 1_000)
FULL_MARKS = (100, 1_000, 10_000)
WINDOW = 50
"""Batches before each mark whose appends make that mark's percentiles."""
CHUNKS_PER_COMMIT = 20
"""Chunks per micro-batch: two devices streaming for one second (100-ms chunks)."""
EVENTS_PER_COMMIT = 2
SESSIONS_PER_COMMIT = 2
DEVICES = 40
PCM_BYTES = 3_200
"""100 ms of 16-kHz PCM16."""
MIDNIGHT_AFTER = 600
"""Batches before the simulated clock crosses midnight into the next date partition."""
QUERY_ROUNDS = 5
SEED = 20240301
START = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=1, seconds=-MIDNIGHT_AFTER)

QUERIES: dict[str, str] = {
    "events_by_day": "SELECT event_date, count(*) FROM silver.audio_events GROUP BY 1 ORDER BY 1",
    "device_levels": (
        "SELECT device_id, count(*) AS n, avg(rms_dbfs), max(snr_db) FROM silver.audio_events "
        "GROUP BY 1 ORDER BY n DESC, 1 LIMIT 20"
    ),
    "one_device": (
        "SELECT start_time, predicted_label, score FROM silver.audio_events "
        "WHERE device_id = 'dev-0007' ORDER BY start_time DESC LIMIT 50"
    ),
    "audio_bytes": (
        "SELECT device_id, count(*) AS chunks, sum(octet_length(pcm)) AS bytes "
        "FROM bronze.audio_chunks GROUP BY 1 ORDER BY 1"
    ),
    "sessions": "SELECT count(*), sum(chunks), sum(audio_s) FROM silver.sessions",
}

SIDECAR_TABLES: tuple[TableSpec, ...] = (AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS)


def _micros(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def batch_rows(batch: int, rng: np.random.Generator) -> dict[str, pa.Table]:
    """One micro-batch's rows for each table, at the simulated clock of ``batch``."""
    now = START + timedelta(seconds=batch)
    sessions = [f"sess-{(batch // 60) * SESSIONS_PER_COMMIT + k:08d}" for k in range(2)]
    devices = [f"dev-{(batch // 60 + 7 * k) % DEVICES:04d}" for k in range(2)]
    per_session = CHUNKS_PER_COMMIT // SESSIONS_PER_COMMIT
    seq0 = (batch % 60) * per_session
    n = CHUNKS_PER_COMMIT
    chunk_times = [now + timedelta(milliseconds=100 * (i % per_session)) for i in range(n)]
    chunks = pa.Table.from_pydict(
        {
            "session_id": [sessions[i // per_session] for i in range(n)],
            "device_id": [devices[i // per_session] for i in range(n)],
            "seq": [seq0 + i % per_session for i in range(n)],
            "event_time": chunk_times,
            "received_at": chunk_times,
            "sample_rate": pa.array([16_000] * n, pa.int32()),
            "encoding": ["linear16"] * n,
            "num_samples": pa.array([PCM_BYTES // 2] * n, pa.int32()),
            "pcm": [rng.bytes(PCM_BYTES) for _ in range(n)],
            "label": [None] * n,
            "spool_segment": [f"seg-{batch:08d}"] * n,
            # raw PCM is stored once, in ``pcm``: no bytes-as-received copy
            "received": [None] * n,
            "received_encoding": [None] * n,
            "received_container": [None] * n,
            "ingest_date": [now.date()] * n,
        },
        schema=AUDIO_CHUNKS.schema,
    )
    m = EVENTS_PER_COMMIT
    # Right after midnight a batch still lands events that started the day before.
    starts = [
        now - timedelta(seconds=2 if batch % 50 == 0 else 0, milliseconds=400 * k) for k in range(m)
    ]
    rms = rng.normal(-30.0, 6.0, m)
    predicted = rng.integers(0, len(LABELS), m)
    events = pa.Table.from_pydict(
        {
            "event_id": [f"ev-{batch:08d}-{k}" for k in range(m)],
            "session_id": [sessions[k % 2] for k in range(m)],
            "device_id": [devices[k % 2] for k in range(m)],
            "start_time": starts,
            "end_time": [t + timedelta(milliseconds=800) for t in starts],
            "duration_s": [0.8] * m,
            "rms_dbfs": rms,
            "peak_dbfs": rms + 9.0,
            "clipping_ratio": [0.0] * m,
            "snr_db": rng.normal(18.0, 6.0, m),
            "speech_ratio": rng.random(m),
            "predicted_label": [LABELS[int(p)] for p in predicted],
            "score": rng.uniform(0.4, 1.0, m),
            "model_version": ["3"] * m,
            "label": [None] * m,
            "first_seq": [seq0] * m,
            "last_seq": [seq0 + per_session - 1] * m,
            "sample_rate": pa.array([16_000] * m, pa.int32()),
            "feature_version": ["logmel-v1"] * m,
            "event_date": [t.date() for t in starts],
        },
        schema=AUDIO_EVENTS.schema,
    )
    started = START + timedelta(seconds=(batch // 60) * 60)
    sessions_rows = pa.Table.from_pydict(
        {
            "session_id": sessions,
            "device_id": devices,
            "encoding": ["linear16"] * 2,
            "sample_rate": pa.array([16_000] * 2, pa.int32()),
            "started_at": [started] * 2,
            "ended_at": [now + timedelta(seconds=1)] * 2,
            "chunks": [seq0 + per_session] * 2,
            "dropped_chunks": [0, 0],
            "audio_s": [(seq0 + per_session) / 10] * 2,
            "speech_s": [0.8 * (batch % 60 + 1)] * 2,
            "events": [batch % 60 + 1] * 2,
            "session_date": [started.date()] * 2,
        },
        schema=SESSIONS.schema,
    )
    return {AUDIO_CHUNKS.name: chunks, AUDIO_EVENTS.name: events, SESSIONS.name: sessions_rows}


class CatalogCommitTimer:
    """Wall ms of the metadata catalog's one commit per batch (``MetadataCatalog.record``, the
    real method, timed where the ``Lake`` calls it at the end of ``Lake.batch``)."""

    def __init__(self, lake: Lake) -> None:
        self.last_ms = 0.0
        record = lake.catalog.record

        def timed(rows: list[dict[str, Any]]) -> None:
            t0 = time.perf_counter()
            try:
                record(rows)
            finally:
                self.last_ms = (time.perf_counter() - t0) * 1e3

        lake.catalog.record = timed  # type: ignore[method-assign]


def land_batch(
    lake: Lake, batch: int, rows: dict[str, pa.Table], catalog: CatalogCommitTimer
) -> tuple[list[float], float]:
    """Commit one batch as the sidecar does: each table's commit (wall ms, auto-compaction and
    its share of the batch's one catalog commit included) and the CPU ms of the whole batch
    (catalog file included)."""
    walls: list[float] = []
    cpu0 = time.process_time()
    with lake.batch():
        for spec in SIDECAR_TABLES:
            t0 = time.perf_counter()
            write = lake.upsert if spec is SESSIONS else lake.append
            write(
                spec, rows[spec.name], writer="sidecar", app_id="sidecar-bench", app_version=batch
            )
            walls.append((time.perf_counter() - t0) * 1e3)
    share = catalog.last_ms / len(walls)
    return [ms + share for ms in walls], (time.process_time() - cpu0) * 1e3


def query_suite(catalog_file: Path, rounds: int) -> tuple[float, list[list[tuple]]]:
    """Median seconds of the whole suite over ``rounds`` (after one warm-up), and its answers."""
    con = duckdb.connect(str(catalog_file), read_only=True)
    try:
        answers = [con.execute(sql).fetchall() for sql in QUERIES.values()]
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for sql in QUERIES.values():
                con.execute(sql).fetchall()
            times.append(time.perf_counter() - t0)
    finally:
        con.close()
    return float(np.median(times)), answers


def _canonical(answers: list[list[tuple]]) -> list[list[str]]:
    """Answers in a comparable form: rows as text, sorted, floats rounded (sum order)."""
    return [
        sorted(repr(tuple(round(v, 6) if isinstance(v, float) else v for v in row)) for row in rows)
        for rows in answers
    ]


def _files(lake: Lake) -> dict[str, int]:
    """Data files of each table's snapshot, and entries of each local ``_delta_log`` (what
    delta-rs lists on every commit), the metadata catalog's own included."""
    out = {}
    for spec in SIDECAR_TABLES:
        snapshot = lake.table_snapshot(spec)
        out[f"files_{spec.name}"] = snapshot.files if snapshot else 0
    logs = {spec.name: lake.uri(spec) for spec in SIDECAR_TABLES}
    logs[TABLE_VERSIONS.name] = lake.catalog.uri(TABLE_VERSIONS)
    for name, uri in logs.items():
        out[f"log_entries_{name}"] = len(list((delta.local_folder(uri) / "_delta_log").iterdir()))
    return out


def _compacted_copy(lake: Lake, root: Path) -> Lake:
    """The same rows, each table written in one commit (the baseline's compacted lake)."""
    baseline = wiring.open_lake(str(root))
    with baseline.batch():
        for spec in SIDECAR_TABLES:
            baseline.append(spec, lake.read(spec), writer="baseline")
    return baseline


def run(quick: bool, marks: tuple[int, ...] | None = None) -> BenchResult:
    marks = marks or (QUICK_MARKS if quick else FULL_MARKS)
    result = BenchResult(
        benchmark="growth",
        params={
            "marks": list(marks),
            "window": WINDOW,
            "chunks_per_commit": CHUNKS_PER_COMMIT,
            "events_per_commit": EVENTS_PER_COMMIT,
            "tables": [spec.name for spec in SIDECAR_TABLES],
            "queries": list(QUERIES),
        },
    )
    rng = np.random.default_rng(SEED)
    appends: dict[int, list[float]] = {}
    batch_cpu: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="sonolake-growth-") as tmp, progress() as bar:
        lake = wiring.open_lake(str(Path(tmp) / "lakehouse"))
        catalog = CatalogCommitTimer(lake)
        result.params["compaction"] = repr(lake.compaction)
        task = bar.add_task("landing micro-batches", total=marks[-1])
        for batch in range(1, marks[-1] + 1):
            appends[batch], batch_cpu[batch] = land_batch(
                lake, batch, batch_rows(batch, rng), catalog
            )
            bar.advance(task)
            if batch not in marks:
                continue
            window = [ms for b in range(batch - WINDOW + 1, batch + 1) for ms in appends[b]]
            stats = percentiles(window, 50, 99)
            cpu = percentiles([batch_cpu[b] for b in range(batch - WINDOW + 1, batch + 1)], 50)
            t0 = time.perf_counter()
            lake.refresh_sql_catalog()
            refresh_ms = (time.perf_counter() - t0) * 1e3
            assert lake.catalog_file is not None
            suite_s, answers = query_suite(lake.catalog_file, QUERY_ROUNDS)
            baseline = _compacted_copy(lake, Path(tmp) / f"compacted-{batch}")
            assert baseline.catalog_file is not None
            base_s, base_answers = query_suite(baseline.catalog_file, QUERY_ROUNDS)
            if _canonical(answers) != _canonical(base_answers):
                raise AssertionError(f"at {batch}: the lake and its compacted copy disagree")
            result.metrics.update(
                {
                    f"append_ms_p50@{batch}": stats["p50"],
                    f"append_ms_p99@{batch}": stats["p99"],
                    f"batch_cpu_ms_p50@{batch}": cpu["p50"],
                    f"catalog_refresh_ms@{batch}": refresh_ms,
                    f"query_suite_s@{batch}": suite_s,
                    **{f"{name}@{batch}": n for name, n in _files(lake).items()},
                }
            )
            result.baseline[f"query_suite_s@{batch}"] = base_s
            result.ratios[f"query_vs_compacted@{batch}"] = suite_s / base_s
            shutil.rmtree(Path(tmp) / f"compacted-{batch}")
    first, last = marks[0], marks[-1]
    result.ratios["append_growth"] = (
        result.metrics[f"append_ms_p50@{last}"] / result.metrics[f"append_ms_p50@{first}"]
    )
    result.ratios["batch_cpu_growth"] = (
        result.metrics[f"batch_cpu_ms_p50@{last}"] / result.metrics[f"batch_cpu_ms_p50@{first}"]
    )
    result.ratios["query_vs_compacted"] = result.ratios[f"query_vs_compacted@{last}"]
    return result
