"""Re-deriving decisions from landed audio: the explicit batch job, never the landing path.

After a promotion (a backfill with the new champion) or for audio landed without decisions
(spool format 1), ``sonolake reprocess`` and the Dagster asset ``gold/reprocessed_predictions``
re-segment a time range of ``bronze.audio_chunks`` and re-score it with a chosen model:

1. each session's chunks are decoded and resampled together (:func:`features.pcm.chunks_to_16k`);
2. the VAD scores them with the gateway's level gate, batched across sessions
   (:func:`streaming.vad.speech_probabilities_many`);
3. the ONE segmenter finds the utterances (:func:`streaming.segments.find_utterances`, the
   gateway's :class:`~streaming.endpointing.Endpointer` and defaults);
4. each utterance's audio — with the gateway's pre-roll and tail — is classified in one batch;
5. the utterances become ``utterance`` decision records, landed through the sidecar's own
   Beam landing transform (:class:`streaming.sidecar.pipeline.LandRecords`, the step
   :class:`~streaming.sidecar.pipeline.LandSpool` lands every spool batch with), which turns
   them into ``gold.predictions`` rows under the run's ``run_id``, a new versioned set
   beside the live one.

This is a batch job over a bounded range, so it may go session by session; the hot path never
calls it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.pcm import SAMPLE_RATE_HZ, chunks_to_16k
from features.window import classified_span, fit_window
from lake_schemas.tables import PREDICTIONS
from streaming.segments import SegmenterParams, find_utterances
from streaming.sidecar.records import CHUNK_SCHEMA, split_by_session
from streaming.spool import KIND_UTTERANCE, SPOOL_SCHEMA
from streaming.vad import speech_probabilities_many

US_PER_S = 1_000_000


class BatchClassifier(Protocol):
    """What re-scoring needs of a model (``models.serving.ServingEngine`` fits)."""

    @property
    def model_version(self) -> str | None: ...

    def classify_batch(self, windows: np.ndarray) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Reprocessed:
    run_id: str
    sessions: int
    chunks: int
    predictions: pa.Table


def new_run_id() -> str:
    return f"reprocess-{uuid.uuid4().hex[:12]}"


def utterance_records(
    chunks: pa.Table, params: SegmenterParams | None = None
) -> tuple[pa.Table, list[np.ndarray]]:
    """The ``utterance`` decision records (:data:`SPOOL_SCHEMA`, no prediction yet) the
    gateway's segmenter finds in chunks (``bronze.audio_chunks`` columns: session_id,
    device_id, seq, event_time, sample_rate, encoding, num_samples, pcm, label), and each
    utterance's classifier window (with the gateway's pre-roll and tail)."""
    params = params or SegmenterParams()
    prepared = []
    for _, rows in split_by_session(chunks):
        rows = rows.sort_by("seq")
        encoding = rows.column("encoding")[0].as_py()
        rate = int(rows.column("sample_rate")[0].as_py())
        audio = chunks_to_16k(rows.column("pcm"), encoding, rate)
        samples = np.asarray(rows.column("num_samples"), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(samples)[:-1]]) * SAMPLE_RATE_HZ // rate
        prepared.append((rows, audio, starts))
    probs = speech_probabilities_many([a for _, a, _ in prepared], gate_dbfs=params.vad_gate_dbfs)
    records: list[dict[str, Any]] = []
    windows: list[np.ndarray] = []
    for (rows, audio, starts), session_probs in zip(prepared, probs, strict=True):
        seqs = rows.column("seq").to_pylist()
        first_us = int(pc.cast(rows.column("event_time"), pa.int64())[0].as_py())
        labels = rows.column("label").to_pylist()
        for index, span in enumerate(find_utterances(session_probs, params)):
            first = max(0, int(np.searchsorted(starts, span.start_sample, "right")) - 1)
            last = max(0, int(np.searchsorted(starts, max(span.end_sample - 1, 0), "right")) - 1)
            clip_start, clip_end = classified_span(span.start_sample, span.end_sample)
            clip = audio[clip_start:clip_end]
            windows.append(fit_window(clip))
            records.append(
                {
                    "kind": KIND_UTTERANCE,
                    "session_id": rows.column("session_id")[0].as_py(),
                    "device_id": rows.column("device_id")[0].as_py(),
                    "seq": -1,
                    "event_time": first_us + span.start_sample * US_PER_S // SAMPLE_RATE_HZ,
                    "received_at": first_us,
                    "sample_rate": int(rows.column("sample_rate")[0].as_py()),
                    "encoding": rows.column("encoding")[0].as_py(),
                    "pcm": b"",
                    "label": next((x for x in labels[first : last + 1] if x is not None), None),
                    "utterance": index + 1,
                    "result_index": index,
                    "is_final": True,
                    "speech_final": span.reason == "silence",
                    "start_sample": span.start_sample,
                    "end_sample": span.end_sample,
                    "first_seq": seqs[first],
                    "last_seq": seqs[last],
                    "speech_ratio": span.speech_ratio,
                    "end_reason": span.reason,
                    "role": "reprocess",
                }
            )
    return pa.Table.from_pylist(records, schema=SPOOL_SCHEMA), windows


def rederive(
    chunks: pa.Table,
    classifier: BatchClassifier | None,
    *,
    run_id: str | None = None,
    params: SegmenterParams | None = None,
) -> Reprocessed:
    """Utterances and predictions of ``bronze.audio_chunks`` rows (see the module docstring)."""
    run_id = run_id or new_run_id()
    table = scored_records(chunks, classifier, params)
    sessions = pc.count_distinct(chunks.column("session_id")).as_py() if chunks.num_rows else 0
    return Reprocessed(run_id, sessions, chunks.num_rows, land_decisions(table, run_id))


def scored_records(
    chunks: pa.Table, classifier: BatchClassifier | None, params: SegmenterParams | None = None
) -> pa.Table:
    """The ``utterance`` decision records of :func:`utterance_records`, each with the
    classifier's prediction of its window (none without a classifier or a model version)."""
    table, windows = utterance_records(chunks, params)
    if table.num_rows and classifier is not None and classifier.model_version is not None:
        predictions = classifier.classify_batch(np.stack(windows))
        version = classifier.model_version
        table = table.drop_columns(["predicted_label", "score", "top_k", "model_version"])
        table = table.append_column(
            SPOOL_SCHEMA.field("predicted_label"), pa.array([p.label for p in predictions])
        )
        table = table.append_column(
            SPOOL_SCHEMA.field("score"), pa.array([float(p.score) for p in predictions])
        )
        table = table.append_column(
            SPOOL_SCHEMA.field("top_k"),
            pa.array(
                [[{"label": lbl, "score": float(x)} for lbl, x in p.top_k] for p in predictions],
                SPOOL_SCHEMA.field("top_k").type,
            ),
        )
        table = table.append_column(
            SPOOL_SCHEMA.field("model_version"),
            pa.array([p.model_version or version for p in predictions], pa.string()),
        )
        table = table.select(SPOOL_SCHEMA.names)
    return table


def land_decisions(decisions: pa.Table, run_id: str) -> pa.Table:
    """``gold.predictions`` rows of decision records (:data:`SPOOL_SCHEMA`), landed through
    the sidecar's Beam landing transform under ``run_id``."""
    if decisions.num_rows == 0:
        return PREDICTIONS.schema.empty_table()
    from streaming.sidecar.pipeline import PREDICTIONS_OUT, land_records

    n = decisions.num_rows
    rows = decisions.append_column(
        CHUNK_SCHEMA.field("spool_segment"), pa.array([run_id] * n, pa.string())
    ).append_column(CHUNK_SCHEMA.field("record_index"), pa.array(np.arange(n), pa.int64()))
    return land_records(rows, run_id=run_id)[PREDICTIONS_OUT]
