"""Compare what clients were promised (their Acks) with what bronze holds after the sidecar.

An ``Ack`` for seq N of a session promises that every chunk the client sent in that session up
to N is stored. The audit checks the promise key by key — ``(session_id, seq)`` with the very
bytes that were sent — and counts:

- **lost**: an acknowledged chunk missing from bronze, or stored with other bytes;
- **duplicates**: bronze rows beyond the first for one key, plus an acknowledged chunk (by its
  bytes) stored under two acknowledged keys;
- **stored_unacked**: rows the client never saw acknowledged (the gateway died between the
  fsync and the ``Ack``). Not an error: the client resends them, and a resume of the same
  session deduplicates them by key.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa
from resuming_client import StreamReport, chunk_bytes


@dataclass(frozen=True)
class Audit:
    acked: int
    lost: int
    duplicates: int
    stored_unacked: int
    bronze_rows: int

    def line(self) -> str:
        return (
            f"chunks acked {self.acked}, lost {self.lost}, duplicates {self.duplicates}, "
            f"stored but not acked {self.stored_unacked}, bronze rows {self.bronze_rows}"
        )


def audit(reports: dict[int, StreamReport], bronze: pa.Table) -> Audit:
    """``reports`` by stream index; ``bronze`` with session_id, seq and pcm columns."""
    stored: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for session_id, seq, pcm in zip(
        bronze["session_id"].to_pylist(),
        bronze["seq"].to_pylist(),
        bronze["pcm"].to_pylist(),
        strict=True,
    ):
        stored[(session_id, seq)].append(pcm)
    acked_keys: set[tuple[str, int]] = set()
    acked_chunks: Counter[tuple[int, int]] = Counter()
    lost = 0
    for stream, report in reports.items():
        for session in report.sessions:
            for seq, chunk in session.acked_chunks().items():
                key = (session.session_id, seq)
                acked_keys.add(key)
                acked_chunks[(stream, chunk)] += 1
                if chunk_bytes(stream, chunk) not in stored.get(key, []):
                    lost += 1
    duplicates = sum(len(rows) - 1 for rows in stored.values())
    duplicates += sum(count - 1 for count in acked_chunks.values())
    return Audit(
        acked=len(acked_keys),
        lost=lost,
        duplicates=duplicates,
        stored_unacked=sum(1 for key in stored if key not in acked_keys),
        bronze_rows=bronze.num_rows,
    )
