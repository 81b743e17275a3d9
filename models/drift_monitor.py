"""Drift over the lake: the events since the last report against the champion's reference.

Each report covers the events whose features were computed since the previous report (or, for
a new champion, since its training set was taken), so a report answers "is what came in since
I last looked like what the serving model learned from?". The window is processing time (when
features were computed), never the devices' event time: a replay faster than real time stamps
its events minutes in the future. :mod:`models.drift` does the statistics; this module decides
what is compared and reads the reports back (the retraining sensor's question).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import FEATURE_VERSION, SUMMARY_COLUMNS
from lake_schemas import AUDIO_FEATURES, DRIFT_REPORTS, Lake
from models.drift import DriftResult, NotEnoughData, detect_drift, features_frame, report_row
from models.drift_reference import load_reference
from models.registry import CHAMPION, Registry

REPORT_COLUMNS = [
    "report_id",
    "created_at",
    "dataset_drift",
    "drift_share",
    "reference_model_version",
]
"""What the retraining sensor reads of each report."""


@dataclass(frozen=True)
class DriftComparison:
    """A finished comparison: the result and the row it becomes (``html_uri`` still unset)."""

    result: DriftResult
    row: dict[str, Any]
    champion: str


@dataclass(frozen=True)
class NoComparison:
    """Why no report was made this time."""

    reason: str
    new_events: int | None = None


def previous_window_end(lake: Lake) -> datetime | None:
    """Where the last report's window ended (None before the first report)."""
    if not lake.exists(DRIFT_REPORTS):
        return None
    return pc.max(lake.read(DRIFT_REPORTS, columns=["window_end"]).column("window_end")).as_py()


def features_since(lake: Lake, since: datetime | None, limit: int) -> pa.Table:
    """The newest ``limit`` feature rows computed after ``since`` (id, time, vector)."""
    columns = ["event_id", "computed_at", "features"]
    if not lake.exists(AUDIO_FEATURES):
        return AUDIO_FEATURES.schema.empty_table().select(columns)
    flt = pc.field("feature_version") == FEATURE_VERSION
    if since is not None:
        flt = flt & (pc.field("computed_at") > pa.scalar(since, pa.timestamp("us", tz="UTC")))
    rows = lake.read(AUDIO_FEATURES, columns=columns, filter=flt)
    return rows.sort_by([("computed_at", "descending")]).slice(0, limit)


def compare_with_champion(
    lake: Lake, registry: Registry, *, drift_share: float, min_events: int, max_events: int
) -> DriftComparison | NoComparison:
    """Compare the features since the last report with the champion's training reference."""
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return NoComparison("no champion model yet: nothing to compare with")
    reference = load_reference(registry, champion)
    if reference is None:
        return NoComparison(f"champion version {champion} has no drift reference logged")
    previous = previous_window_end(lake)
    since = max((t for t in (previous, reference.snapshot_at) if t is not None), default=None)
    current = features_since(lake, since, max_events)
    if current.num_rows < min_events:
        return NoComparison(
            f"{current.num_rows} events with features computed since {since}; a report needs "
            f"{min_events}",
            new_events=current.num_rows,
        )
    current_frame = features_frame(
        np.asarray(current.column("features").to_pylist()), SUMMARY_COLUMNS
    )
    reference_frame = reference.features[list(SUMMARY_COLUMNS)].astype(np.float64)
    try:
        result = detect_drift(reference_frame, current_frame, drift_share=drift_share)
    except NotEnoughData as exc:
        return NoComparison(str(exc))
    computed = current.column("computed_at")
    row = report_row(
        result,
        reference_model_version=champion,
        window_start=pc.min(computed).as_py(),
        window_end=pc.max(computed).as_py(),
        html_uri=None,
        created_at=datetime.now(UTC),
    )
    return DriftComparison(result, row, champion)


def reports_after(lake: Lake, after: datetime | None) -> pa.Table:
    """Drift reports created after ``after`` (all of them for None), oldest first."""
    if not lake.exists(DRIFT_REPORTS):
        return DRIFT_REPORTS.schema.empty_table().select(REPORT_COLUMNS)
    flt = None
    if after is not None:
        flt = pc.field("created_at") > pa.scalar(after, pa.timestamp("us", tz="UTC"))
    return lake.read(DRIFT_REPORTS, columns=REPORT_COLUMNS, filter=flt).sort_by("created_at")
