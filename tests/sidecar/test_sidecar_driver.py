"""The micro-batch driver against a real spool and a real Delta lake, in one process.

Crashes are simulated by an exception thrown from the phase hook (the kill -9 test does it with
real processes); after each, a fresh driver on the same folders must finish the job with every
chunk and every segment landed exactly once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sessions_table import session_rows
from sidecar_signals import (
    MODEL_VERSION,
    SyntheticSession,
    assert_landed_exactly_once,
    interleave,
    sessions,
    write_spool,
)

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, DEAD_LETTERS, PREDICTIONS, SESSIONS, Lake
from lake_schemas.tables import TableSpec
from streaming.session_ids import new_session_id
from streaming.sidecar.driver import DONE_MARKER, Sidecar, SidecarConfig
from streaming.spool import (
    LANDED_DIR,
    QUARANTINE_DIR,
    SPOOL_SCHEMA,
    SPOOL_SCHEMA_V1,
    SPOOL_SCHEMA_V2,
    SpoolRecord,
    records_to_batch,
    sealed_segments,
    segment_name,
    worker_spool_dir,
)


class Crash(BaseException):
    """Stands for the process dying at a phase boundary."""


def _sidecar(tmp_path: Path, crash_at: set[tuple[str, int]] | None = None, **kw) -> Sidecar:
    config = SidecarConfig(
        spool_dir=tmp_path / "spool",
        state_dir=tmp_path / "state",
        max_segments_per_batch=kw.pop("max_segments_per_batch", 3),
        retention_s=kw.pop("retention_s", 0.0),
    )
    crashes = crash_at if crash_at is not None else set()

    def on_phase(phase: str, batch: int) -> None:
        if (phase, batch) in crashes:
            crashes.discard((phase, batch))
            raise Crash(f"{phase}@{batch}")

    return Sidecar(Lake(tmp_path / "lake"), config, on_phase=on_phase, **kw)


def _land_all(tmp_path: Path, crash_at: set[tuple[str, int]] | None = None, **kw) -> int:
    """Run drivers (a fresh one after each crash) until nothing is left; returns crashes."""
    crashes = 0
    crash_at = set() if crash_at is None else crash_at
    while True:
        sidecar = _sidecar(tmp_path, crash_at, **kw)
        try:
            while sidecar.land_once() is not None:
                pass
            return crashes
        except Crash:
            crashes += 1


def _land_the_rest(sidecar: Sidecar, group: list[SyntheticSession]) -> None:
    """Land what is left with this driver, then check every row landed exactly once."""
    while sidecar.land_once() is not None:
        pass
    assert_landed_exactly_once(sidecar.lake, group)


def test_lands_chunks_segments_and_sessions_across_micro_batches(tmp_path: Path) -> None:
    group = sessions(4, chunks=30, bursts=2)
    write_spool(
        tmp_path / "spool", interleave(s.records(dropped_chunks=3) for s in group), per_segment=12
    )
    segments = len(sealed_segments(tmp_path / "spool"))
    assert segments >= 9  # so sessions straddle several 3-segment batches
    assert _land_all(tmp_path) == 0
    lake = Lake(tmp_path / "lake")
    assert_landed_exactly_once(lake, group)
    events = lake.read(AUDIO_EVENTS).to_pylist()
    for event in events:
        assert 0.3 <= event["duration_s"] <= 0.8, event
        assert event["speech_ratio"] > 0.5
        assert -40 < event["rms_dbfs"] < -10 and event["peak_dbfs"] <= 0
        assert event["snr_db"] > 5
        # The gateway's final result for the utterance, not a second opinion.
        assert event["predicted_label"] == event["label"]
        assert event["model_version"] == MODEL_VERSION
        assert event["first_seq"] <= event["last_seq"]
    labels = {e["session_id"]: e["label"] for e in events}
    assert labels == {s.session_id: s.label for s in group}
    assert {r["dropped_chunks"] for r in lake.read(SESSIONS).to_pylist()} == {3}
    assert lake.read(DEAD_LETTERS).num_rows == 0
    assert not sealed_segments(tmp_path / "spool"), "landed segments are retired"
    assert lake.transaction_version(AUDIO_CHUNKS, "sidecar") == -(-segments // 3)


def test_the_next_batch_is_staged_while_a_batch_commits_and_lands_after_it(
    tmp_path: Path,
) -> None:
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    waiting = len(sealed_segments(tmp_path / "spool"))
    order: list[tuple[str, int]] = []
    sidecar = _sidecar(tmp_path)
    sidecar.on_phase = lambda phase, batch: order.append((phase, batch))
    first = sidecar.land_once()
    assert first is not None and first.batch == 1 and not first.replayed
    assert order.index(("staged", 1)) < order.index(("pipeline", 2)) < order.index(("landed", 1))
    assert ("landed", 2) not in order, "batch 2 is staged, not landed"
    assert len(sealed_segments(tmp_path / "spool")) == waiting - 3, "its segments still wait"
    second = sidecar.land_once()
    assert second is not None and second.batch == 2
    assert not second.replayed and not second.reused_staged, "staged here: no replay"
    assert order.count(("pipeline", 2)) == 1

    restarted = _sidecar(tmp_path)  # batch 3 was staged ahead by the process that "died"
    third = restarted.land_once()
    assert third is not None and third.batch == 3 and third.replayed
    assert not third.reused_staged, "its audio was held by the process that is gone"
    _land_the_rest(restarted, group)


def test_one_batch_at_a_time_when_pipeline_ahead_is_off(tmp_path: Path) -> None:
    group = sessions(2, chunks=30, bursts=1)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    sidecar = _sidecar(tmp_path)
    sidecar.config = replace(sidecar.config, pipeline_ahead=False)
    order: list[tuple[str, int]] = []
    sidecar.on_phase = lambda phase, batch: order.append((phase, batch))
    assert sidecar.land_once() is not None
    assert {batch for _, batch in order} == {1}


def test_a_crash_at_every_phase_replays_and_lands_nothing_twice(tmp_path: Path) -> None:
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    phases = [
        ("planned", 1),
        ("recorded", 1),
        ("pipeline", 1),
        ("staged", 2),
        ("committed:bronze.audio_chunks", 2),
        ("committed:silver.audio_events", 3),
        ("committed:silver.sessions", 3),
        ("landed", 3),
        ("retired", 4),
    ]
    assert _land_all(tmp_path, set(phases)) == len(phases)
    assert_landed_exactly_once(Lake(tmp_path / "lake"), group)


def _crash_in_bronze_commit(sidecar: Sidecar, batch: int) -> None:
    """The process dies inside bronze's commit of ``batch``, the other tables' commits done."""
    append = sidecar.lake.append

    def dying_append(spec: TableSpec, table: pa.Table, **kw: object) -> object:
        if spec is AUDIO_CHUNKS and kw.get("app_version") == batch:
            raise Crash(f"bronze commit of batch {batch}")
        return append(spec, table, **kw)  # type: ignore[arg-type]

    sidecar.lake.append = dying_append  # type: ignore[method-assign,assignment]


def test_audio_held_by_a_gone_process_is_landed_again_from_the_same_input(
    tmp_path: Path,
) -> None:
    """The bronze rows are held in the memory of the process that ran the pipeline; a process
    that finds them gone, and bronze without the batch, runs the batch's pipeline again, and
    the tables that took it already are skipped."""
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    dying = _sidecar(tmp_path)
    _crash_in_bronze_commit(dying, 2)
    with pytest.raises(Crash):
        while dying.land_once() is not None:
            pass
    staged = tmp_path / "state" / "batches" / f"{2:012d}"
    assert json.loads((staged / DONE_MARKER).read_text())["audio_held"]
    assert not list(staged.glob("bronze-*")), "the audio is never written twice"
    lake = Lake(tmp_path / "lake")
    assert lake.transaction_version(AUDIO_EVENTS, "sidecar") == 2
    assert lake.transaction_version(AUDIO_CHUNKS, "sidecar") == 1
    sidecar = _sidecar(tmp_path)
    again = sidecar.land_once()
    assert again is not None and again.batch == 2 and again.replayed
    assert not again.reused_staged, "its audio is gone with the process: staged again"
    assert AUDIO_EVENTS.name in again.skipped_tables, "the table that took batch 2 keeps it"
    assert again.committed_rows[AUDIO_CHUNKS.name] > 0
    _land_the_rest(sidecar, group)


def test_a_batch_whose_audio_was_committed_reuses_its_staged_rows(tmp_path: Path) -> None:
    group = sessions(3, chunks=30, bursts=2)
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    dying = _sidecar(tmp_path, {("committed:bronze.audio_chunks", 2)})
    with pytest.raises(Crash):
        while dying.land_once() is not None:
            pass
    sidecar = _sidecar(tmp_path)
    again = sidecar.land_once()
    assert again is not None and again.batch == 2 and again.replayed and again.reused_staged
    assert AUDIO_CHUNKS.name in again.skipped_tables
    _land_the_rest(sidecar, group)


def test_sessions_with_the_gateways_ids_merge_into_their_partitions_only(tmp_path: Path) -> None:
    """A batch of sessions the gateway opened reads and merges silver.sessions only around
    their creation dates, whatever older partitions hold, and still adds up across batches."""
    group = [replace(s, session_id=new_session_id()) for s in sessions(3, chunks=30, bursts=2)]
    lake = Lake(tmp_path / "lake")
    long_ago = session_rows(
        [f"{1_600_000_000_000:012x}" + "0" * 20], date(2020, 9, 13), chunks=7, device_id="spk-9"
    )
    lake.append(SESSIONS, long_ago, writer="earlier")
    write_spool(tmp_path / "spool", interleave(s.records() for s in group), per_segment=10)
    assert _land_all(tmp_path) == 0
    merges = [
        h["operationMetrics"]
        for h in lake.history(SESSIONS)
        if h["operation"] == "MERGE" and h.get("writer") == "sidecar"
    ]
    assert len(merges) >= 2, "sessions straddle batches"
    assert all(m["num_target_files_skipped_during_scan"] >= 1 for m in merges)
    assert lake.read(SESSIONS).num_rows == len(group) + 1
    assert_landed_exactly_once(
        lake, group, other_sessions=frozenset(long_ago["session_id"].to_pylist())
    )


def test_a_chunk_sent_twice_lands_once_even_in_a_later_batch(tmp_path: Path) -> None:
    (session,) = sessions(1, chunks=30, bursts=2)
    records = session.records()
    # Resumed session: chunks 10-14 are spooled again two segments later (and once more
    # in the same segment), as a client re-sending what it had no ack for.
    replay = records[10:15]
    write_spool(tmp_path / "spool", records[:20] + replay, per_segment=5)
    write_spool(tmp_path / "spool", replay + records[20:] + records[12:13], per_segment=5)
    _land_all(tmp_path, max_segments_per_batch=2)
    assert_landed_exactly_once(Lake(tmp_path / "lake"), [session])


def _write_raw_segment(spool: Path, segment_id: int, payload: bytes) -> None:
    (spool / segment_name(segment_id)).write_bytes(payload)


def _segment_bytes(table: pa.Table, schema: pa.Schema = SPOOL_SCHEMA) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_bad_segments_and_records_are_quarantined_and_the_rest_lands(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    group = sessions(2, chunks=20, bursts=1)
    write_spool(spool, interleave(s.records() for s in group), per_segment=100)
    good = sealed_segments(spool)[0]
    data = good.path.read_bytes()
    base = good.segment_id
    _write_raw_segment(spool, base + 1, data[: len(data) // 2])  # truncated mid-stream
    wrong = pa.table({"session_id": ["x"], "seq": [1]})
    _write_raw_segment(spool, base + 2, _segment_bytes(wrong, wrong.schema))
    bad = SpoolRecord.chunk(
        session_id="bad",
        device_id="d",
        seq=0,
        event_time=group[0].records()[0].event_time,
        sample_rate=16000,
        encoding="opus",
        pcm=b"\x00\x01",
    )
    empty = replace(bad, encoding="linear16", pcm=b"", seq=1)
    fine = replace(bad, encoding="linear16", pcm=b"\x00\x01" * 1600, seq=2)
    mixed = pa.Table.from_batches([records_to_batch([bad, empty, fine])])
    _write_raw_segment(spool, base + 3, _segment_bytes(mixed))
    _land_all(tmp_path)

    lake = Lake(tmp_path / "lake")
    dead = {
        (r["source"], r["record_index"]): r["reason"] for r in lake.read(DEAD_LETTERS).to_pylist()
    }
    assert "truncated" in dead[(segment_name(base + 1), None)]
    assert "schema" in dead[(segment_name(base + 2), None)]
    assert "unknown encoding 'opus'" in dead[(segment_name(base + 3), 0)]
    assert dead[(segment_name(base + 3), 1)] == "zero-length pcm"
    assert len(dead) == 4
    bronze = lake.read(AUDIO_CHUNKS, columns=["session_id", "seq"])
    assert bronze.num_rows == 2 * 20 + 1  # the good segment and the one good record
    assert pc.sum(pc.equal(bronze["session_id"], "bad")).as_py() == 1
    quarantined = sorted(p.name for p in (spool / QUARANTINE_DIR).iterdir())
    assert quarantined == [segment_name(base + 1), segment_name(base + 2)]


def test_retention_keeps_landed_segments_for_a_while(tmp_path: Path) -> None:
    group = sessions(1, chunks=16, bursts=1)
    records = group[0].records()
    write_spool(tmp_path / "spool", records, per_segment=6)
    _land_all(tmp_path, retention_s=3600)
    assert not sealed_segments(tmp_path / "spool")
    assert len(list((tmp_path / "spool" / LANDED_DIR).iterdir())) == -(-len(records) // 6)


def test_a_conflicting_payload_for_a_landed_key_is_dead_lettered(tmp_path: Path) -> None:
    """Same stream, same seq, other bytes: not a duplicate; kept with the reason, in a later
    batch as well as in the same one, and the original stays in bronze."""
    (session,) = sessions(1, chunks=20, bursts=1)
    records = session.records()
    chunk = records[5]
    forged = replace(chunk, pcm=b"\x01\x02" * 1600)
    write_spool(tmp_path / "spool", [*records[:10], forged], per_segment=11)
    write_spool(
        tmp_path / "spool", [replace(forged, pcm=b"\x03\x04" * 1600), *records[10:]], per_segment=50
    )
    _land_all(tmp_path, max_segments_per_batch=1)
    lake = Lake(tmp_path / "lake")
    assert_landed_exactly_once(lake, [session])
    bronze = lake.read(AUDIO_CHUNKS).filter(pc.equal(pc.field("seq"), 5))
    assert bronze["pcm"].to_pylist() == [chunk.pcm]
    dead = lake.read(DEAD_LETTERS).to_pylist()
    assert len(dead) == 2
    assert {(d["session_id"], d["seq"]) for d in dead} == {(session.session_id, 5)}
    assert all("conflicting payload" in d["reason"] and d["payload"] for d in dead)


def test_a_format_1_spool_segment_still_lands(tmp_path: Path) -> None:
    """Segments written before decisions were spooled (audio only) land as before: bronze
    and sessions; no events or predictions, since no decision was recorded."""
    (session,) = sessions(1, chunks=16, bursts=1)
    audio = [r for r in session.records() if r.kind in ("chunk", "session_end")]
    batch = records_to_batch(audio)
    old = pa.Table.from_batches([batch]).select(SPOOL_SCHEMA_V1.names).cast(SPOOL_SCHEMA_V1)
    spool = tmp_path / "spool"
    spool.mkdir()
    _write_raw_segment(spool, 1, _segment_bytes(old, SPOOL_SCHEMA_V1))
    _land_all(tmp_path)
    lake = Lake(tmp_path / "lake")
    assert lake.read(AUDIO_CHUNKS).num_rows == 16
    assert lake.read(AUDIO_EVENTS).num_rows == 0 and lake.read(PREDICTIONS).num_rows == 0
    (row,) = lake.read(SESSIONS).to_pylist()
    assert (row["chunks"], row["dropped_chunks"]) == (16, 0)
    assert lake.read(DEAD_LETTERS).num_rows == 0
    assert lake.read(AUDIO_CHUNKS).column("received").null_count == 16, "raw PCM: pcm only"


def test_a_format_2_spool_segment_lands_with_its_decisions(tmp_path: Path) -> None:
    """Segments written before received bytes were kept (every stream was raw PCM) land
    whole: their chunks' bytes are in pcm, and received stays null."""
    (session,) = sessions(1, chunks=16, bursts=1)
    records = session.records()
    table = pa.Table.from_batches([records_to_batch(records)])
    old = table.select(SPOOL_SCHEMA_V2.names).cast(SPOOL_SCHEMA_V2)
    spool = tmp_path / "spool"
    spool.mkdir()
    _write_raw_segment(spool, 1, _segment_bytes(old, SPOOL_SCHEMA_V2))
    _land_all(tmp_path)
    lake = Lake(tmp_path / "lake")
    bronze = lake.read(AUDIO_CHUNKS).sort_by("seq")
    chunks = [r for r in records if r.kind == "chunk"]
    assert bronze.column("pcm").to_pylist() == [r.pcm for r in chunks]
    assert bronze.column("received").null_count == len(chunks)
    decisions = [r for r in records if r.kind in ("result", "utterance")]
    assert decisions and lake.read(PREDICTIONS).num_rows == len(decisions)
    assert lake.read(DEAD_LETTERS).num_rows == 0


def test_a_compressed_chunk_is_a_duplicate_by_the_bytes_the_client_sent(tmp_path: Path) -> None:
    """A compressed frame resent after a gateway restart is decoded again by a fresh decoder,
    so its PCM may differ: the same received bytes make it a duplicate (the first landed PCM
    stays); other received bytes under the same seq are a conflict, dead-lettered with them."""
    (session,) = sessions(1, chunks=16, bursts=1)
    records = [
        replace(r, received=b"frame-%d" % r.seq, received_container="ogg")
        if r.kind == "chunk"
        else r
        for r in session.records()
    ]
    chunks = [r for r in records if r.kind == "chunk"]
    redecoded = replace(chunks[4], pcm=b"\x07\x00" * 1600)  # same frame, another decoder
    forged = replace(chunks[6], received=b"another frame")
    write_spool(tmp_path / "spool", [*records, redecoded, forged], per_segment=100)
    _land_all(tmp_path)
    lake = Lake(tmp_path / "lake")
    bronze = lake.read(AUDIO_CHUNKS).sort_by("seq").to_pylist()
    assert [r["seq"] for r in bronze] == [r.seq for r in chunks]
    assert bronze[4]["pcm"] == chunks[4].pcm and bronze[4]["received"] == b"frame-4"
    (dead,) = lake.read(DEAD_LETTERS).to_pylist()
    assert (dead["seq"], dead["payload"]) == (6, b"another frame")
    assert "conflicting payload" in dead["reason"]


def test_every_worker_folder_lands_and_a_chunk_stored_by_two_workers_lands_once(
    tmp_path: Path,
) -> None:
    """``gateway --workers N``: one spool folder per worker; a session resumed on another
    worker has some chunks stored by both (sent again after the resume)."""
    group = sessions(2, chunks=20, bursts=1)
    records = interleave(s.records() for s in group)
    chunks = [r for r in records if r.kind == "chunk"]
    spool = tmp_path / "spool"
    write_spool(worker_spool_dir(spool, 0), records[::2], per_segment=8)
    write_spool(worker_spool_dir(spool, 1), records[1::2] + chunks[:10], per_segment=8)
    (worker_spool_dir(spool, 1) / segment_name(1)).write_bytes(b"not a segment")
    folders = {s.folder for s in sealed_segments(spool)}
    assert folders == {"worker-0", "worker-1"}
    assert _land_all(tmp_path) == 0
    lake = Lake(tmp_path / "lake")
    assert_landed_exactly_once(lake, group)
    assert not sealed_segments(spool), "every worker's landed segments are retired"
    quarantined = worker_spool_dir(spool, 1) / QUARANTINE_DIR / segment_name(1)
    assert quarantined.exists(), "an unreadable segment is kept in its worker's quarantine"
