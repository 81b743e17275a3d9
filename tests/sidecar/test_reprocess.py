"""Re-deriving from bronze: the same segmenter as the gateway, a chosen model, a new run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from sidecar_signals import T0, interleave, process_env, sessions, write_spool
from support import REPO_ROOT

from lake_schemas import AUDIO_CHUNKS, PREDICTIONS, Lake
from streaming.reprocess import rederive, scored_records
from streaming.segments import find_utterances
from streaming.sidecar import records
from streaming.sidecar.arrow_ipc import ipc_bytes
from streaming.sidecar.landing import bronze_rows
from streaming.sidecar.options import local_options
from streaming.sidecar.pipeline import PREDICTIONS_OUT, LandSpool, StageOutputs
from streaming.sidecar.staging import read_parts
from streaming.spool import sealed_segments
from streaming.vad import speech_probabilities

SERVING_TESTS = Path(__file__).resolve().parents[1] / "serving"


def _bundle(folder: Path) -> Path:
    sys.path.insert(0, str(SERVING_TESTS))
    try:
        from serving_bundles import random_linear, write_bundle
    finally:
        sys.path.remove(str(SERVING_TESTS))
    return write_bundle(folder, *random_linear(seed=3))


def _bronze(tmp_path: Path, group: list) -> pa.Table:
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=500)
    rows = pa.concat_tables(
        records.decode(s.name, s.path.read_bytes())[0] for s in sealed_segments(tmp_path / "spool")
    )
    return bronze_rows(rows.filter(pc.equal(rows.column("kind"), "chunk")))


def test_rederive_finds_each_burst_once_and_scores_it(tmp_path: Path) -> None:
    from models.serving import ServingEngine

    group = sessions(2, chunks=30, bursts=2)
    chunks = _bronze(tmp_path, group)
    engine = ServingEngine.from_bundle(_bundle(tmp_path / "bundle"), model_version="9")
    result = rederive(chunks, engine, run_id="backfill-1")
    rows = result.predictions.to_pylist()
    assert (result.sessions, result.chunks) == (2, 60)
    assert sorted((r["session_id"], r["utterance"]) for r in rows) == [
        (s.session_id, u) for s in group for u in (1, 2)
    ]
    for row in rows:
        assert row["run_id"] == "backfill-1" and row["role"] == "reprocess"
        assert row["model_version"] == "9" and row["predicted_label"] in engine.labels
        assert row["is_final"] and 0.3 <= row["duration_s"] <= 0.8
        assert row["start_time"] >= T0
    # The same segmenter over the same probabilities: the spans the job reports.
    audio = group[0].audio()
    spans = find_utterances(speech_probabilities(audio, gate_dbfs=-60.0))
    mine = sorted(
        (r["start_s"], r["duration_s"]) for r in rows if r["session_id"] == group[0].session_id
    )
    assert [
        (round(s.start_sample / 16000, 3), round((s.end_sample - s.start_sample) / 16000, 3))
        for s in spans
    ] == [(round(a, 3), round(b, 3)) for a, b in mine]


def test_rederived_predictions_are_what_the_sidecar_lands_from_the_same_records(
    tmp_path: Path,
) -> None:
    """One landing transform: the job's predictions are the rows the sidecar's LandSpool lands
    when the same scored utterance records arrive in a spool segment (run id aside)."""
    from models.serving import ServingEngine

    chunks = _bronze(tmp_path, sessions(2, chunks=30, bursts=2))
    engine = ServingEngine.from_bundle(_bundle(tmp_path / "bundle"), model_version="9")
    job = rederive(chunks, engine, run_id="backfill-2").predictions
    segment = ipc_bytes(scored_records(chunks, engine))
    out = tmp_path / "staged"
    out.mkdir()
    with beam.Pipeline(options=local_options()) as pipeline:
        pipeline | beam.Create([("rederived.arrow", segment)]) | LandSpool() | StageOutputs(out)
    live = read_parts(out, PREDICTIONS_OUT, PREDICTIONS.schema)
    assert job.num_rows == live.num_rows == 4
    assert set(job["run_id"].to_pylist()) == {"backfill-2"}
    key = [("prediction_id", "ascending")]
    assert (
        job.drop_columns(["run_id"]).sort_by(key).equals(live.drop_columns(["run_id"]).sort_by(key))
    )


def test_reprocess_command_appends_a_new_run(tmp_path: Path, bytecode_cache: Path) -> None:
    group = sessions(1, chunks=20, bursts=1)
    lake = Lake(tmp_path / "lake")
    lake.append(AUDIO_CHUNKS, _bronze(tmp_path, group), writer="test")
    bundle = _bundle(tmp_path / "bundle")
    env = process_env(
        bytecode_cache, state_dir=str(tmp_path / "state"), lake_uri=str(tmp_path / "lake")
    )
    command = [sys.executable, "-m", "sonolake", "reprocess", "--model", str(bundle)]
    out = subprocess.run(
        [*command, "--since", "2024-05-01T00:00:00Z", "--until", "2024-05-02T00:00:00Z"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["predictions"] == 1 and summary["chunks"] == 20
    (row,) = Lake(tmp_path / "lake").read(PREDICTIONS).to_pylist()
    assert row["run_id"] == summary["run_id"]
    empty = subprocess.run(
        [*command, "--since", "2030-01-01", "--until", "2030-01-02"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert empty.returncode == 2 and "no chunks in bronze" in empty.stderr
