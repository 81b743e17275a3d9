"""gold.predictions rows of champion and shadow answering the same live segments, built the
way the gateway and the sidecar build them (spool decision records → ``prediction_rows``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from streaming.sidecar.landing import prediction_rows
from streaming.spool import SpoolRecord, records_to_batch

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def segments(
    truth: Sequence[str | None],
    champion: Sequence[str],
    shadow: Sequence[str],
    versions: tuple[str, str],
) -> pa.Table:
    """One session whose i-th final segment carries ``truth[i]``, answered by both models."""
    records = []
    for i, (label, said, shadowed) in enumerate(zip(truth, champion, shadow, strict=True)):
        common: dict[str, Any] = {
            "session_id": "s1",
            "device_id": "d1",
            "event_time": T0,
            "sample_rate": 16000,
            "encoding": "linear16",
            "label": label,
            "utterance": i + 1,
            "result_index": i,
            "speech_final": True,
            "start_sample": i * 32000,
            "end_sample": i * 32000 + 16000,
            "last_seq": i * 20 + 10,
            "score": 0.9,
            "top_k": [],
            "latency_ms": 1.0,
        }
        records.append(
            SpoolRecord.decision(
                final=True,
                first_seq=i * 20,
                predicted_label=said,
                model_version=versions[0],
                role="champion",
                **common,
            )
        )
        records.append(
            SpoolRecord.shadow_result(predicted_label=shadowed, model_version=versions[1], **common)
        )
    return prediction_rows(pa.Table.from_batches([records_to_batch(records)]))
