"""The landing transform itself: source-agnostic, same result however the batches fall, and a
graph that builds with the cluster runners' options (they cannot run here: their job servers
need downloads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from sidecar_signals import interleave, sessions, write_spool

from streaming.segments import SegmenterParams, add_to_ranges, find_segments, seqs_in_ranges
from streaming.sidecar import records
from streaming.sidecar.enrich import finish_session, prepare_session
from streaming.sidecar.options import dataflow_options, flink_options, local_options
from streaming.sidecar.pipeline import (
    BRONZE,
    CARRY,
    DEAD,
    EVENTS,
    SESSIONS,
    LandSpool,
    ReadSegmentFiles,
    StageOutputs,
)
from streaming.sidecar.staging import read_parts
from streaming.spool import read_segment, sealed_segments
from streaming.vad import speech_probabilities_many


def test_seq_ranges_merge_and_answer_membership() -> None:
    lo, hi = add_to_ranges([], [], np.array([5, 1, 2, 3, 9, 10, 2]))
    assert (lo, hi) == ([1, 5, 9], [3, 5, 10])
    lo, hi = add_to_ranges(lo, hi, np.array([4, 6, 7, 8]))
    assert (lo, hi) == ([1], [10])
    mask = seqs_in_ranges(np.array([0, 1, 10, 11]), [1, 20], [10, 30])
    assert mask.tolist() == [False, True, True, False]


def test_segments_need_min_speech_and_end_after_the_endpointing_gap() -> None:
    params = SegmenterParams(min_speech_ms=100, endpointing_ms=300)
    probs = np.zeros(60, dtype=np.float32)
    probs[5:7] = 0.9  # 64 ms blip: too short to start speech
    probs[15:25] = 0.9  # 320 ms of speech...
    probs[25:27] = 0.4  # ...still speech by hysteresis (>= threshold_off)
    probs[50:58] = 0.9  # open at the end
    closed, open_start = find_segments(probs, params)
    assert closed == [(15, 27)]
    assert open_start == 50


def _session_tables(spool: Path) -> dict[str, list[pa.Table]]:
    out: dict[str, list[pa.Table]] = {}
    for segment in sealed_segments(spool):
        table, dead = records.decode(segment.name, segment.path.read_bytes())
        assert dead is None and table is not None
        for session_id, rows in records.split_by_session(table):
            out.setdefault(session_id, []).append(rows)
    return out


@pytest.mark.parametrize("encoding, rate", [("linear16", 16000), ("mulaw", 8000)])
def test_segments_do_not_depend_on_where_batches_split(
    tmp_path: Path, encoding: str, rate: int
) -> None:
    (session,) = sessions(1, chunks=34, bursts=2)
    session = dataclasses.replace(session, encoding=encoding, sample_rate=rate)
    write_spool(tmp_path, session.records(end=False), per_segment=4)
    parts = _session_tables(tmp_path)[session.session_id]
    params = SegmenterParams()

    def land(batches: list[list[pa.Table]]) -> list[tuple[str, int, int]]:
        carry, events = None, []
        for batch in batches:
            work = prepare_session(session.session_id, batch, carry)
            assert work is not None
            (probs,) = speech_probabilities_many([work.audio_16k], gate_dbfs=params.vad_gate_dbfs)
            result = finish_session(work, probs, params, work.last_received_us)
            events += [(e["event_id"], e["first_seq"], e["last_seq"]) for e in result.events]
            carry = result.carry
        return events

    whole = land([parts])
    assert len(whole) == 2
    for split in (1, 3, 5):
        batches = [parts[i : i + split] for i in range(0, len(parts), split)]
        events = land(batches)
        # Each burst is found once whatever the split; its edges may move by a chunk where
        # the VAD restarted on carried audio instead of running straight through.
        assert len(events) == len(whole), f"split every {split} segments"
        for (_, first, last), (_, first_whole, last_whole) in zip(events, whole, strict=True):
            assert abs(first - first_whole) <= 1 and abs(last - last_whole) <= 1


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
    assert sorted(events["event_id"].to_pylist()) == sorted(
        from_files["events"]["event_id"].to_pylist()
    )
    assert sum(read_segment(s.path).num_rows for s in sealed_segments(tmp_path / "spool")) == 42


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
    """The same transform behind an unbounded source, with event-time session windows."""
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
    outputs = unbounded | "Land" >> LandSpool(session_gap_s=30.0)
    assert set(outputs) == {BRONZE, EVENTS, SESSIONS, DEAD, CARRY}
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Land/Decode", "Land/SessionWindows", "Land/PerSession", "Land/Enrich"} <= names
    assert any(
        "Sessions" in s.window_fn.urn or "session" in s.window_fn.urn
        for s in proto.components.windowing_strategies.values()
    )
