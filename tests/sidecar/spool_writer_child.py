"""A real spool writer process for the crash test: appends chunks and prints each acked seq.

Usage: ``python spool_writer_child.py SPOOL_DIR SESSIONS``. It runs until killed; every line
it prints is a seq whose ``append`` returned, i.e. a promise that the chunk is durable.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from streaming.spool import SpoolRecord, SpoolWriter


async def _session(writer: SpoolWriter, session: int, counter: list[int]) -> None:
    seq = 0
    while True:
        record = SpoolRecord.chunk(
            session_id=f"s{session}",
            device_id=f"d{session}",
            seq=seq,
            event_time=datetime.now(UTC),
            sample_rate=16000,
            encoding="linear16",
            pcm=bytes([seq % 256]) * 640,
        )
        await writer.append(record)
        sys.stdout.write(f"s{session} {seq}\n")
        sys.stdout.flush()
        seq += 1
        counter[0] += 1
        if counter[0] % 50 == 0:
            await asyncio.sleep(0)


async def main(spool_dir: Path, sessions: int) -> None:
    writer = SpoolWriter(
        spool_dir, max_segment_bytes=64 * 1024, max_segment_age_s=0.05, commit_interval_ms=1.0
    )
    await writer.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    counter = [0]
    await asyncio.gather(*(_session(writer, s, counter) for s in range(sessions)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
