"""The landing transform itself: source-agnostic, same result however the batches fall, and a
graph that builds with the cluster runners' options (they cannot run here: their job servers
need downloads)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from sidecar_signals import MODEL_VERSION, interleave, sessions, write_spool

from features.levels import levels, snr_db
from features.pcm import decode_chunks
from lake_schemas import PREDICTIONS
from streaming.endpointing import Endpointer
from streaming.segments import SegmenterParams, find_utterances
from streaming.sidecar import records
from streaming.sidecar.landing import KEYS_SCHEMA, land
from streaming.sidecar.levels import STATS_SCHEMA
from streaming.sidecar.options import dataflow_options, flink_options, local_options
from streaming.sidecar.pipeline import (
    BRONZE,
    CARRY,
    DEAD,
    EVENTS,
    PREDICTIONS_OUT,
    SESSIONS,
    LandSpool,
    ReadSegmentFiles,
    StageOutputs,
)
from streaming.sidecar.staging import read_parts
from streaming.spool import read_segment, sealed_segments
from streaming.vad import WINDOW_SAMPLES


def test_the_batch_segmenter_is_the_live_endpointer() -> None:
    """find_utterances over a whole clip gives exactly the gateway's events, window by window."""
    rng = np.random.default_rng(3)
    probs = np.clip(rng.normal(0.2, 0.3, 900), 0, 0.99).astype(np.float32)
    probs[100:140] = 0.9
    probs[600:] = 0.9  # longer than the 10-s cap: ends at max_duration, then again open
    live = Endpointer(300)
    events = []
    for i, p in enumerate(probs.tolist()):
        event = live.push(p, i * WINDOW_SAMPLES, (i + 1) * WINDOW_SAMPLES)
        if event is not None:
            events.append(event)
    end = live.force_end("close")
    events += [end] if end is not None else []
    spans = find_utterances(probs, SegmenterParams())
    starts = [e.sample for e in events if e.kind == "start"]
    ends = [(e.sample, e.reason) for e in events if e.kind == "end"]
    assert [s.start_sample for s in spans] == starts
    assert [(s.end_sample, s.reason) for s in spans] == ends
    assert "max_duration" in {s.reason for s in spans} and spans[-1].reason == "close"
    assert all(0.0 <= s.speech_ratio <= 1.0 for s in spans)


def test_utterances_need_min_speech_and_end_after_the_endpointing_gap() -> None:
    probs = np.zeros(60, dtype=np.float32)
    probs[5] = 0.9  # one 32-ms window: shorter than the 64-ms minimum
    probs[15:25] = 0.9  # 320 ms of speech...
    probs[25:27] = 0.4  # ...still speech by hysteresis (>= threshold_off)
    spans = find_utterances(probs)
    assert [(s.start_sample // WINDOW_SAMPLES, s.end_sample // WINDOW_SAMPLES) for s in spans] == [
        (15, 27)
    ]
    assert spans[0].reason == "silence"
    assert spans[0].speech_ratio == pytest.approx(10 / 12)


def _rows(spool: Path) -> pa.Table:
    tables = []
    for segment in sealed_segments(spool):
        table, dead = records.decode(segment.name, segment.path.read_bytes())
        assert dead is None and table is not None
        tables.append(table)
    return pa.concat_tables(tables)


def test_levels_over_the_batch_match_features_levels_of_the_utterance(tmp_path: Path) -> None:
    """Vectorised levels = features.levels: RMS and SNR of the utterance's own audio (to a
    20-ms frame), peak and clipping of the chunks it spans (exactly)."""
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=40)
    rows = _rows(tmp_path / "spool")
    landed = land(rows, KEYS_SCHEMA.empty_table(), STATS_SCHEMA.empty_table())
    assert landed.events.num_rows == 6 and landed.predictions.num_rows == 12
    bronze = landed.bronze
    for event in landed.events.to_pylist():
        mine = bronze.filter(
            pc.and_(
                pc.equal(bronze.column("session_id"), event["session_id"]),
                pc.and_(
                    pc.greater_equal(bronze.column("seq"), event["first_seq"]),
                    pc.less_equal(bronze.column("seq"), event["last_seq"]),
                ),
            )
        ).sort_by("seq")
        samples, _ = decode_chunks(mine.column("pcm"), "linear16")
        chunk_audio = samples.astype(np.float32) / 32768.0
        offset_s = (event["start_time"] - mine.column("event_time")[0].as_py()).total_seconds()
        first = round(offset_s * 16000)
        span = chunk_audio[first : first + round(event["duration_s"] * 16000)]
        whole = levels(chunk_audio)
        assert event["peak_dbfs"] == pytest.approx(whole.peak_dbfs, abs=1e-6)
        assert event["clipping_ratio"] == pytest.approx(whole.clipping_ratio)
        assert event["rms_dbfs"] == pytest.approx(levels(span).rms_dbfs, abs=0.3)
        assert event["rms_dbfs"] > whole.rms_dbfs + 0.5, "the silence after it is not counted"
        assert event["snr_db"] == pytest.approx(snr_db(span), abs=1.5)
        assert event["model_version"] == MODEL_VERSION


def test_results_are_landed_wherever_the_batches_split(tmp_path: Path) -> None:
    """Split the same records into batches of any size (carry in between): the same rows."""
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=7)
    segments = sealed_segments(tmp_path / "spool")

    def run(split: int) -> tuple[list, list, int]:
        keys, stats = KEYS_SCHEMA.empty_table(), STATS_SCHEMA.empty_table()
        events, predictions, bronze = [], [], 0
        for start in range(0, len(segments), split):
            parts = [
                records.decode(s.name, s.path.read_bytes())[0]
                for s in segments[start : start + split]
            ]
            landed = land(pa.concat_tables(parts), keys, stats)
            keys, stats = landed.keys, landed.stats
            events += landed.events.select(["event_id", "rms_dbfs", "snr_db"]).to_pylist()
            predictions += landed.predictions["prediction_id"].to_pylist()
            bronze += landed.bronze.num_rows
        return sorted(events, key=lambda e: e["event_id"]), sorted(predictions), bronze

    whole = run(len(segments))
    assert whole[2] == 90 and len(whole[0]) == 6 and len(whole[1]) == 12
    for split in (1, 2, 5):
        assert run(split) == whole, f"split every {split} segments"


def _run_local(spool: Path, out: Path) -> dict[str, pa.Table]:
    out.mkdir()
    with beam.Pipeline(options=local_options()) as pipeline:
        segments = pipeline | ReadSegmentFiles([s.path for s in sealed_segments(spool)])
        segments | LandSpool() | StageOutputs(out)
    return {name: read_parts(out, name, None) for name in ("bronze", "events")}


def test_transform_reads_segments_from_any_source(tmp_path: Path) -> None:
    """(name, bytes) pairs from files or from memory (a Kafka message, an object) land alike."""
    group = sessions(2, chunks=20, bursts=1)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=15)
    from_files = _run_local(tmp_path / "spool", tmp_path / "files")
    in_memory = [(s.name, s.path.read_bytes()) for s in sealed_segments(tmp_path / "spool")]
    out = tmp_path / "memory"
    out.mkdir()
    with beam.Pipeline(options=local_options()) as pipeline:
        pipeline | beam.Create(in_memory) | LandSpool() | StageOutputs(out)
    events = read_parts(out, "events", None)
    assert from_files["bronze"].num_rows == 40
    assert read_parts(out, PREDICTIONS_OUT, PREDICTIONS.schema).num_rows == 4
    assert sorted(events["event_id"].to_pylist()) == sorted(
        from_files["events"]["event_id"].to_pylist()
    )
    # 20 chunks, an interim and a final result, and the end of each session
    assert sum(read_segment(s.path).num_rows for s in sealed_segments(tmp_path / "spool")) == 46


@pytest.mark.parametrize(
    "options",
    [
        flink_options(flink_master="flink-jobmanager:8081", parallelism=8),
        dataflow_options(
            project="acme-audio", region="europe-west1", temp_location="gs://acme-tmp/sonolake"
        ),
    ],
    ids=["flink", "dataflow"],
)
def test_cluster_graph_builds_with_streaming_runner_options(options) -> None:
    """The same transform behind an unbounded source, with event-time windows."""
    standard = options.view_as(StandardOptions)
    assert standard.streaming is True
    assert standard.runner in ("FlinkRunner", "DataflowRunner")
    if standard.runner == "FlinkRunner":
        assert options.view_as(FlinkRunnerOptions).flink_master == "flink-jobmanager:8081"
        assert options.view_as(FlinkRunnerOptions).parallelism == 8
        assert options.view_as(PortableOptions).environment_type == "DOCKER"
        # Flink's own options travel to the job server by name.
        retained = options.get_all_options(retain_unknown_options=True)
        assert retained["checkpointing_interval"] == 10_000
    else:
        assert options.view_as(GoogleCloudOptions).enable_streaming_engine is True
        assert options.view_as(WorkerOptions).autoscaling_algorithm == "THROUGHPUT_BASED"
    pipeline = beam.Pipeline(options=options)
    unbounded = (
        pipeline
        | "Ticks" >> PeriodicImpulse(fire_interval=1.0)
        | "AsSegment" >> beam.Map(lambda _: ("kafka:spool/0@0", b""))
    )
    outputs = unbounded | "Land" >> LandSpool(window_s=10.0)
    assert set(outputs) == {BRONZE, EVENTS, PREDICTIONS_OUT, SESSIONS, DEAD, CARRY}
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {
        "Land/Decode",
        "Land/Windows",
        "Land/LandRecords/Gather",
        "Land/LandRecords/Land",
    } <= names
    assert any(
        "fixed" in s.window_fn.urn.lower() for s in proto.components.windowing_strategies.values()
    )
