"""gold.audio_features rows: each event's audio from bronze, summarised the way drift compares.

For each event, the audio is put back together from bronze (:mod:`models.lake_audio`) and
summarised by :func:`features.summary_features` (levels in dBFS, spectral shape in Hz, pooled
log-mel), stamped with the current ``FEATURE_VERSION``. An event that already has features of
this version is not computed again (the rows are keyed on ``(event_id, feature_version)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import FEATURE_VERSION, summary_features
from lake_schemas import AUDIO_EVENTS, AUDIO_FEATURES, Lake
from models.lake_audio import EVENT_COLUMNS, read_event_audio

ROW_COLUMNS = ["event_id", "session_id", "device_id", "label", "event_date"]
"""The silver columns a feature row copies."""


@dataclass(frozen=True)
class DayFeatures:
    """What computing one event date's features found and made."""

    events: int
    already_done: int
    rows: pa.Table
    """New gold.audio_features rows (schema of the table)."""

    @property
    def missing_audio(self) -> int:
        """Events whose chunks are not (all) in bronze yet."""
        return self.events - self.already_done - self.rows.num_rows


def _done_event_ids(lake: Lake, day: date) -> pa.Array:
    if not lake.exists(AUDIO_FEATURES):
        return pa.array([], pa.string())
    done = lake.read(
        AUDIO_FEATURES,
        columns=["event_id"],
        filter=[("event_date", "=", day), ("feature_version", "=", FEATURE_VERSION)],
    )
    return done.column("event_id").combine_chunks()


def feature_rows(lake: Lake, events: pa.Table, computed_at: datetime) -> pa.Table:
    """Feature rows of ``events`` (:data:`EVENT_COLUMNS` + :data:`ROW_COLUMNS`) whose audio
    is all in bronze."""
    info = {r["event_id"]: r for r in events.select(ROW_COLUMNS).to_pylist()}
    rows = [
        {
            **info[event.event_id],
            "feature_version": FEATURE_VERSION,
            "features": summary_features(event.audio_16k).astype(np.float32).tolist(),
            "computed_at": computed_at,
        }
        for event in read_event_audio(lake, events)
    ]
    return pa.Table.from_pylist(rows, schema=AUDIO_FEATURES.schema)


def features_of_day(lake: Lake, day: date) -> DayFeatures:
    """The rows one UTC event date still needs (nothing is written here)."""
    events = lake.read(
        AUDIO_EVENTS,
        columns=list(dict.fromkeys([*EVENT_COLUMNS, *ROW_COLUMNS])),
        filter=[("event_date", "=", day)],
    )
    done = _done_event_ids(lake, day)
    todo = events.filter(pc.invert(pc.is_in(events.column("event_id"), done)))
    rows = feature_rows(lake, todo, datetime.now(UTC)) if todo.num_rows else None
    return DayFeatures(
        events=events.num_rows,
        already_done=events.num_rows - todo.num_rows,
        rows=rows if rows is not None else AUDIO_FEATURES.schema.empty_table(),
    )
