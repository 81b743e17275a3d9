"""``query``: analyst SQL over silver.audio_events through the DuckDB catalog file.

N synthetic events (quick: 200k, full: 2M) are written with the ``Lake`` in several commits
(so the table has many files, as a streaming writer leaves it), then a set of typical analyst
queries runs through the catalog file (a separate read-only DuckDB connection, views pinned to
the Delta snapshot) and, as the baseline in the same run, through DuckDB's ``read_parquet``
over the same files (what an analyst would write by hand, with hive partitioning for the date).
Rounds alternate catalog and raw so that a busy neighbour affects both alike.

Metrics: ``seconds_p50_<query>`` per query and ``seconds_p50`` for the whole set (wall time;
``cpu_seconds_p50`` beside it). Ratio ``vs_raw_parquet`` = raw time / catalog time (goal ≥ 0.8).
"""

from __future__ import annotations

import math
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from benchmarks.harness import BenchResult, cpu_seconds, percentiles, progress
from lake_schemas import AUDIO_EVENTS, Lake
from models.dataset import LABELS

QUICK_ROWS = 200_000
FULL_ROWS = 2_000_000
QUICK_COMMITS = 8
FULL_COMMITS = 20
QUICK_ROUNDS = 7
FULL_ROUNDS = 9
DAYS = 30
DEVICES = 500
FIRST_DAY = date(2024, 3, 1)
SEED = 20240301

TABLE = "silver.audio_events"
QUERIES: dict[str, str] = {
    "count_by_day": f"SELECT event_date, count(*) AS events FROM {TABLE} GROUP BY 1 ORDER BY 1",
    "device_levels": (
        "SELECT device_id, count(*) AS events, avg(rms_dbfs) AS rms_dbfs, avg(peak_dbfs) AS "
        f"peak_dbfs, avg(snr_db) AS snr_db FROM {TABLE} GROUP BY 1 ORDER BY events DESC, 1 LIMIT 50"
    ),
    "label_distribution": (
        "SELECT predicted_label, count(*) AS events, avg(score) AS score, "
        f"avg(CASE WHEN label = predicted_label THEN 1.0 ELSE 0.0 END) AS agreement FROM {TABLE} "
        "GROUP BY 1 ORDER BY 2 DESC, 1"
    ),
    "filtered_top_n": (
        f"SELECT event_id, device_id, start_time, snr_db FROM {TABLE} "
        "WHERE event_date BETWEEN DATE '2024-03-10' AND DATE '2024-03-16' "
        "AND speech_ratio > 0.5 AND predicted_label = 'yes' ORDER BY snr_db DESC, event_id LIMIT 20"
    ),
}


def synthetic_events(start: int, n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` events with ids from ``start``: random devices, days, levels and labels."""
    ids = np.arange(start, start + n)
    day = rng.integers(0, DAYS, n)
    offset_us = rng.integers(0, 86_400_000_000, n)
    base_us = int(
        datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC).timestamp() * 1e6
    )
    start_us = base_us + day * 86_400_000_000 + offset_us
    duration_s = rng.uniform(0.2, 2.0, n)
    rms = rng.normal(-32.0, 6.0, n)
    predicted = rng.integers(0, len(LABELS), n)
    truth = np.where(rng.random(n) < 0.8, predicted, rng.integers(0, len(LABELS), n))
    labels = pa.array(LABELS)
    has_truth = rng.random(n) < 0.5
    epoch = date(1970, 1, 1)
    first_day_number = (FIRST_DAY - epoch).days
    return pa.Table.from_pydict(
        {
            "event_id": pa.array([f"ev-{i:010d}" for i in ids]),
            "session_id": pa.array([f"sess-{i // 20:09d}" for i in ids]),
            "device_id": pa.array([f"spk-{d:04d}" for d in rng.integers(0, DEVICES, n)]),
            "start_time": pa.array(start_us, pa.timestamp("us", tz="UTC")),
            "end_time": pa.array(
                start_us + (duration_s * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")
            ),
            "duration_s": duration_s,
            "rms_dbfs": rms,
            "peak_dbfs": rms + rng.uniform(3.0, 15.0, n),
            "clipping_ratio": np.clip(rng.normal(0.0, 0.01, n), 0.0, 1.0),
            "snr_db": rng.normal(18.0, 7.0, n),
            "speech_ratio": rng.random(n),
            "predicted_label": labels.take(pa.array(predicted)),
            "score": rng.uniform(0.3, 1.0, n),
            "model_version": pa.array(["3"] * n),
            "label": pa.array(
                [LABELS[t] if h else None for t, h in zip(truth, has_truth, strict=True)],
                pa.string(),
            ),
            "first_seq": ids * 10,
            "last_seq": ids * 10 + 9,
            "sample_rate": pa.array(np.full(n, 16_000, np.int32)),
            "feature_version": pa.array(["logmel-v1"] * n),
            "event_date": pa.array((first_day_number + day).astype(np.int32), pa.date32()),
        },
        schema=AUDIO_EVENTS.schema,
    )


def _same_answer(left: list[tuple], right: list[tuple]) -> bool:
    """Equal rows, floats within 1e-9 relative (parallel sums add in different orders)."""
    if len(left) != len(right):
        return False
    for row_a, row_b in zip(left, right, strict=True):
        for a, b in zip(row_a, row_b, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def _timed(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, float, list[tuple]]:
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    rows = con.execute(sql).fetchall()
    return time.perf_counter() - wall0, cpu_seconds() - cpu0, rows


def run(quick: bool) -> BenchResult:
    rows = QUICK_ROWS if quick else FULL_ROWS
    commits = QUICK_COMMITS if quick else FULL_COMMITS
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    result = BenchResult(
        benchmark="query",
        params={
            "rows": rows,
            "commits": commits,
            "days": DAYS,
            "devices": DEVICES,
            "rounds": rounds,
            "queries": list(QUERIES),
        },
    )
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="sonolake-query-bench-") as tmp, progress() as bar:
        lake = Lake(Path(tmp) / "lakehouse")
        task = bar.add_task("writing events with the Lake", total=commits)
        write_s = 0.0
        per_commit = rows // commits
        for commit in range(commits):
            n = per_commit if commit < commits - 1 else rows - per_commit * (commits - 1)
            batch = synthetic_events(commit * per_commit, n, rng)
            t0 = time.perf_counter()
            lake.append(
                AUDIO_EVENTS, batch, writer="benchmark", app_id="benchmark", app_version=commit
            )
            write_s += time.perf_counter() - t0
            bar.advance(task)
        assert lake.catalog_file is not None
        table_dir = Path(lake.uri(AUDIO_EVENTS))
        files = sorted(table_dir.rglob("*.parquet"))
        raw_source = f"read_parquet('{table_dir}/**/*.parquet', hive_partitioning = true)"

        t0 = time.perf_counter()
        catalog = duckdb.connect(str(lake.catalog_file), read_only=True)
        connect_s = time.perf_counter() - t0
        raw = duckdb.connect()

        walls: dict[str, dict[str, list[float]]] = {"catalog": {}, "raw": {}}
        cpus: dict[str, list[float]] = {"catalog": [], "raw": []}
        task = bar.add_task("queries: catalog vs raw parquet", total=rounds * len(QUERIES))
        for round_index in range(rounds + 1):  # round 0 warms caches and checks results
            suite_cpu = {"catalog": 0.0, "raw": 0.0}
            for name, sql in QUERIES.items():
                order = ("catalog", "raw") if round_index % 2 == 0 else ("raw", "catalog")
                answers = {}
                for side in order:
                    con = catalog if side == "catalog" else raw
                    text = sql if side == "catalog" else sql.replace(TABLE, raw_source)
                    wall, cpu, answers[side] = _timed(con, text)
                    if round_index:
                        walls[side].setdefault(name, []).append(wall)
                        suite_cpu[side] += cpu
                if round_index == 0 and not _same_answer(answers["catalog"], answers["raw"]):
                    raise AssertionError(f"{name}: the catalog and raw parquet disagree")
                if round_index:
                    bar.advance(task)
            if round_index:
                for side in cpus:
                    cpus[side].append(suite_cpu[side])
        catalog.close()
        raw.close()

    def suite(side: str) -> list[float]:
        return [sum(walls[side][name][i] for name in QUERIES) for i in range(rounds)]

    for side, target in (("catalog", result.metrics), ("raw", result.baseline)):
        for name in QUERIES:
            target[f"seconds_p50_{name}"] = percentiles(walls[side][name], 50)["p50"]
        target["seconds_p50"] = percentiles(suite(side), 50)["p50"]
        target["seconds_p90"] = percentiles(suite(side), 90)["p90"]
        target["cpu_seconds_p50"] = percentiles(cpus[side], 50)["p50"]
    result.metrics.update(
        {
            "files": len(files),
            "write_seconds": write_s,
            "write_rows_per_s": rows / write_s,
            "catalog_connect_seconds": connect_s,
        }
    )
    result.ratios["vs_raw_parquet"] = result.baseline["seconds_p50"] / result.metrics["seconds_p50"]
    result.ratios["cpu_vs_raw_parquet"] = (
        result.baseline["cpu_seconds_p50"] / result.metrics["cpu_seconds_p50"]
    )
    for name in QUERIES:
        result.ratios[f"vs_raw_parquet_{name}"] = (
            result.baseline[f"seconds_p50_{name}"] / result.metrics[f"seconds_p50_{name}"]
        )
    return result
