"""The gateway's hand-off to the spool: one group commit in flight per stream, Ack after fsync.

Real :class:`~streaming.spool.SpoolWriter` on a temporary directory, real streams and sessions;
each test takes well under a second.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from gateway_support import bare_stream

from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.registry import SessionRegistry
from streaming.gateway.spooling import spool_loop
from streaming.spool import OPEN_SUFFIX, SpoolRecord, SpoolWriter, read_segment, sealed_segments
from streaming.spool.format import batches_until_torn


def _chunk(seq: int) -> SpoolRecord:
    return SpoolRecord.chunk(
        session_id="s",
        device_id="d",
        seq=seq,
        event_time=datetime(2024, 5, 1, tzinfo=UTC),
        sample_rate=16000,
        encoding="linear16",
        pcm=bytes([seq % 256]) * 320,
    )


def _open_segment_seqs(spool_dir: Path) -> list[int]:
    """Seqs readable right now from the segment being written (what a crash would leave)."""
    seqs: list[int] = []
    for path in spool_dir.glob(f"*{OPEN_SUFFIX}"):
        batches, _ = batches_until_torn(pa.py_buffer(path.read_bytes()))
        for batch in batches:
            seqs += batch.column("seq").to_pylist()
    return seqs


def test_append_many_is_one_group_commit_in_order(tmp_path: Path) -> None:
    async def scenario() -> SpoolWriter:
        async with SpoolWriter(tmp_path, max_segment_age_s=60, commit_interval_ms=0) as writer:
            await writer.append_many([_chunk(seq) for seq in range(50)])
            assert writer.stats.group_commits == 1
        return writer

    writer = asyncio.run(scenario())
    seqs = [
        s for seg in sealed_segments(tmp_path) for s in read_segment(seg.path)["seq"].to_pylist()
    ]
    assert seqs == list(range(50)) and writer.stats.records == 50


def test_submit_calls_back_once_the_records_are_written(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[BaseException | None, list[int]]]:
        calls: list[tuple[BaseException | None, list[int]]] = []
        async with SpoolWriter(tmp_path, max_segment_age_s=60, commit_interval_ms=1) as writer:
            done = asyncio.Event()

            def written(error: BaseException | None) -> None:
                calls.append((error, _open_segment_seqs(tmp_path)))
                done.set()

            writer.submit([_chunk(0), _chunk(1)], written)
            assert not calls  # nothing is acknowledged before the group commit
            await asyncio.wait_for(done.wait(), 10)
        return calls

    (error, on_disk), *more = asyncio.run(scenario())
    assert error is None and not more
    assert on_disk == [0, 1]  # both records were in the file when the callback ran


def test_a_stream_keeps_one_group_commit_in_flight_and_acks_in_order(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        stream = bare_stream()
        session = stream.session
        stream.spool_room.set()
        metrics = GatewayMetrics()
        submitted: list[int] = []
        registry = SessionRegistry(tmp_path / "sessions.db", "w0:test")
        await registry.open()
        async with SpoolWriter(tmp_path, max_segment_age_s=60, commit_interval_ms=5) as writer:
            submit = writer.submit

            def counting_submit(records: list[SpoolRecord], done: object) -> None:
                submitted.append(len(records))
                submit(records, done)  # type: ignore[arg-type]

            writer.submit = counting_submit  # type: ignore[method-assign]
            stream.spool_writer = asyncio.create_task(spool_loop(stream, writer, metrics, registry))
            await asyncio.sleep(0)  # the loop connects the stream to the writer
            for _ in range(4):
                seq, _duplicate = session.assign_seq()
                stream.queue_for_spool(_chunk(seq), 0.0)
            assert stream.spool_in_flight == 1 and len(stream.spool_queue) == 3
            assert session.durable_seq == -1  # nothing is durable before its fsync
            stream.spool_closing = True
            stream.spool_wakeup.set()
            await asyncio.wait_for(stream.spool_writer, 10)
            durable = session.durable_seq
        await registry.close()
        seqs = [
            s
            for seg in sealed_segments(tmp_path)
            for s in read_segment(seg.path)["seq"].to_pylist()
        ]
        return submitted, seqs, durable

    submitted, seqs, durable = asyncio.run(scenario())
    assert submitted == [1, 3]  # the first chunk alone; the three that queued behind it together
    assert seqs == [0, 1, 2, 3] and durable == 3
