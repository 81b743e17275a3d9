"""The spool: group commit, rotation, atomic sealing, crash recovery with a real killed writer."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from lake_schemas import AUDIO_CHUNKS, Lake
from streaming.sidecar.driver import Sidecar, SidecarConfig
from streaming.spool import (
    LANDED_DIR,
    OPEN_SUFFIX,
    SPOOL_SCHEMA,
    SpoolCorrupt,
    SpoolLocked,
    SpoolRecord,
    SpoolWriter,
    purge_landed,
    read_segment,
    records_to_batch,
    retire_segment,
    sealed_segments,
    segment_name,
    worker_spool_dir,
)
from streaming.spool.format import LOCK_FILE

HERE = Path(__file__).resolve().parent


def _chunk(session: str, seq: int, size: int = 320) -> SpoolRecord:
    return SpoolRecord.chunk(
        session_id=session,
        device_id="dev",
        seq=seq,
        event_time=datetime(2024, 5, 1, tzinfo=UTC),
        sample_rate=16000,
        encoding="linear16",
        pcm=bytes([seq % 256]) * size,
        label="yes" if seq % 2 else None,
    )


def _all_records(spool_dir: Path) -> pa.Table:
    tables = [read_segment(s.path) for s in sealed_segments(spool_dir)]
    return pa.concat_tables(tables) if tables else SPOOL_SCHEMA.empty_table()


def test_concurrent_appends_share_group_commits_and_survive_close(tmp_path: Path) -> None:
    async def scenario() -> SpoolWriter:
        writer = SpoolWriter(tmp_path, max_segment_age_s=60, commit_interval_ms=5)
        await writer.start()
        await asyncio.gather(*(writer.append(_chunk(f"s{i % 10}", i)) for i in range(500)))
        await writer.close()
        return writer

    writer = asyncio.run(scenario())
    assert writer.stats.records == 500
    assert writer.stats.group_commits < 50, "concurrent appends should share fsyncs"
    table = _all_records(tmp_path)
    assert sorted(table.column("seq").to_pylist()) == list(range(500))
    assert table.schema.equals(SPOOL_SCHEMA)
    assert not list(tmp_path.glob(f"*{OPEN_SUFFIX}"))


def test_append_resolves_only_after_the_record_is_on_disk(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SpoolWriter(tmp_path, max_segment_age_s=60) as writer:
            await writer.append(_chunk("a", 0))
            (open_path,) = tmp_path.glob(f"*{OPEN_SUFFIX}")
            reader = pa.ipc.open_stream(pa.py_buffer(open_path.read_bytes()))
            assert reader.read_next_batch().column("seq").to_pylist() == [0]

    asyncio.run(scenario())


def test_segments_rotate_by_size_and_age_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SpoolWriter(
            tmp_path, max_segment_bytes=4096, max_segment_age_s=0.2, commit_interval_ms=0
        ) as writer:
            for seq in range(40):  # 40 x 1 KB: several size rotations
                await writer.append(_chunk("a", seq, size=1024))
            size_rotated = len(sealed_segments(tmp_path))
            assert size_rotated >= 5
            await writer.append(_chunk("a", 40))
            await asyncio.sleep(0.6)  # idle: the age timer seals the last segment
            assert len(sealed_segments(tmp_path)) == size_rotated + 1
            assert not list(tmp_path.glob(f"*{OPEN_SUFFIX}"))

    asyncio.run(scenario())
    segments = sealed_segments(tmp_path)
    ids = [s.segment_id for s in segments]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert _all_records(tmp_path).column("seq").to_pylist() == list(range(41))


def test_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with SpoolWriter(tmp_path):
            with pytest.raises(SpoolLocked):
                await SpoolWriter(tmp_path).start()

    asyncio.run(scenario())


def test_recovery_keeps_complete_batches_and_drops_a_torn_tail(tmp_path: Path) -> None:
    open_path = tmp_path / segment_name(123, sealed=False)
    with open(open_path, "wb") as out:
        writer = pa.ipc.new_stream(out, SPOOL_SCHEMA)
        writer.write_batch(records_to_batch([_chunk("a", 0), _chunk("a", 1)]))
        writer.write_batch(records_to_batch([_chunk("a", 2)]))
        out.flush()
        whole = out.tell()
        writer.write_batch(records_to_batch([_chunk("a", 3, size=5000)]))
    with open(open_path, "r+b") as out:
        out.truncate(whole + 100)  # the last batch was torn mid-body

    async def restart() -> None:
        async with SpoolWriter(tmp_path) as writer:
            assert writer.stats.recovered_segments == 1
            await writer.append(_chunk("a", 10))

    asyncio.run(restart())
    segments = sealed_segments(tmp_path)
    assert segments[0].segment_id == 123
    assert read_segment(segments[0].path).column("seq").to_pylist() == [0, 1, 2]
    assert _all_records(tmp_path).column("seq").to_pylist() == [0, 1, 2, 10]
    assert segments[-1].segment_id > 123


def test_read_segment_refuses_damaged_files(tmp_path: Path) -> None:
    async def write() -> None:
        async with SpoolWriter(tmp_path) as writer:
            await writer.append(_chunk("a", 0))

    asyncio.run(write())
    (segment,) = sealed_segments(tmp_path)
    data = segment.path.read_bytes()
    cases = {
        "truncated": data[:-8],
        "empty": b"",
        "garbage": b"not arrow at all",
    }
    for name, payload in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(payload)
        with pytest.raises(SpoolCorrupt):
            read_segment(path)
    other = tmp_path / "schema.bin"
    with open(other, "wb") as out, pa.ipc.new_stream(out, pa.schema([("x", pa.int8())])) as w:
        w.write_batch(pa.record_batch([pa.array([1], pa.int8())], names=["x"]))
    with pytest.raises(SpoolCorrupt, match="schema"):
        read_segment(other)


def test_retire_and_purge(tmp_path: Path) -> None:
    async def write() -> None:
        async with SpoolWriter(tmp_path, max_segment_bytes=1) as writer:
            for seq in range(3):
                await writer.append(_chunk("a", seq))

    asyncio.run(write())
    first, second, third = sealed_segments(tmp_path)
    retire_segment(first, retention_s=0)
    retire_segment(second, retention_s=3600)
    retire_segment(second, retention_s=3600)  # idempotent
    assert [s.segment_id for s in sealed_segments(tmp_path)] == [third.segment_id]
    assert not first.path.exists()
    assert (tmp_path / LANDED_DIR / second.name).exists()
    assert purge_landed(tmp_path, 3600) == 0
    assert purge_landed(tmp_path, 3600, now_s=time.time() + 7200) == 1


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """A real writer process killed mid-stream: every seq it acked is in a sealed segment."""
    acked: set[tuple[str, int]] = set()
    kills_with_open_segment = 0
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "spool_writer_child.py"), str(tmp_path), "8"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        target = 200 + 200 * attempt
        lines = 0
        while lines < target:
            line = proc.stdout.readline()
            session, seq = line.split()
            acked.add((f"{session}#{attempt}", int(seq)))
            lines += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for line in proc.stdout.read().splitlines():  # acks printed before the kill landed
            session, seq = line.split()
            acked.add((f"{session}#{attempt}", int(seq)))
        proc.stdout.close()
        kills_with_open_segment += bool(list(tmp_path.glob(f"*{OPEN_SUFFIX}")))

        # A fresh writer recovers the open segment; then every acked record is sealed.
        async def recover() -> None:
            async with SpoolWriter(tmp_path):
                pass

        asyncio.run(recover())
        assert not list(tmp_path.glob(f"*{OPEN_SUFFIX}"))
        table = _all_records(tmp_path)
        durable = {
            (s, q)
            for s, q in zip(
                table.column("session_id").to_pylist(), table.column("seq").to_pylist(), strict=True
            )
        }
        # Sessions restart at seq 0 in each attempt, so compare per attempt via a fresh view.
        acked_now = {(s.split("#")[0], q) for s, q in acked if s.endswith(f"#{attempt}")}
        assert acked_now <= durable, f"lost acked records: {sorted(acked_now - durable)[:5]}"
        # Retire what was checked so the next attempt's seqs are compared on their own.
        for segment in sealed_segments(tmp_path):
            retire_segment(segment)
    assert kills_with_open_segment >= 1, "no kill landed while a segment was open"


def _start_child_writer(spool_dir: Path, sessions: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "spool_writer_child.py"), str(spool_dir), str(sessions)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_the_sidecar_lands_what_a_killed_writer_left_open_when_no_writer_returns(
    tmp_path: Path,
) -> None:
    """A gateway worker killed and never started again (fewer ``--workers`` after a restart):
    its acknowledged records sit in an open segment no writer will seal. The sidecar seals it
    under the folder's lock and lands it; the open segment of a live writer is left alone."""
    spool = tmp_path / "spool"
    gone, live = worker_spool_dir(spool, 1), worker_spool_dir(spool, 0)
    acked: set[tuple[str, int]] = set()
    for _ in range(5):  # until a kill lands while a segment is open
        proc = _start_child_writer(gone, 4)
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(300)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        lines += proc.stdout.read().splitlines()
        proc.stdout.close()
        acked = {(s, int(q)) for s, q in (line.split() for line in lines)}
        if list(gone.glob(f"*{OPEN_SUFFIX}")):
            break
        shutil.rmtree(gone)
    else:
        pytest.fail("no kill landed while a segment was open")

    async def scenario() -> None:
        async with SpoolWriter(live, max_segment_age_s=60) as writer:
            await writer.append(_chunk("live", 0))
            (live_open,) = live.glob(f"*{OPEN_SUFFIX}")
            sidecar = Sidecar(
                Lake(tmp_path / "lake"),
                SidecarConfig(spool_dir=spool, state_dir=tmp_path / "state", retention_s=0.0),
            )
            while sidecar.land_once() is not None:
                pass
            assert live_open.exists(), "a live writer's open segment is its own"
            assert not list(gone.glob(f"*{OPEN_SUFFIX}"))
            await writer.append(_chunk("live", 1))  # the live writer carries on unharmed

    asyncio.run(scenario())
    bronze = Lake(tmp_path / "lake").read(AUDIO_CHUNKS, columns=["session_id", "seq"])
    landed = list(zip(bronze["session_id"].to_pylist(), bronze["seq"].to_pylist(), strict=True))
    assert len(landed) == len(set(landed)), "a chunk landed twice"
    assert acked <= set(landed), f"lost acked records: {sorted(acked - set(landed))[:5]}"
    assert not any(session == "live" for session, _ in landed)


def test_a_starting_writer_waits_out_the_sidecar_holding_its_lock(tmp_path: Path) -> None:
    """The sidecar holds a gone writer's lock while it seals the open segment; a writer that
    starts meanwhile waits for it instead of being refused."""
    (tmp_path / LOCK_FILE).touch()
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def unlock() -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    release = threading.Timer(0.3, unlock)
    release.start()

    async def scenario() -> None:
        async with SpoolWriter(tmp_path) as writer:
            await writer.append(_chunk("a", 0))

    asyncio.run(scenario())
    release.join()
    assert _all_records(tmp_path).column("seq").to_pylist() == [0]
