"""Data drift: are recent events' features still distributed like the champion's training data?

Evidently 0.7 compares each summary-feature column of the *current* window with the
*reference* (the features of the events the champion was trained on).
``DataDriftPreset(drift_share=s)`` reports how many columns drifted; the dataset as a whole has
drifted when at least the share ``s`` of its columns did.

The per-column test is the normed Wasserstein distance with a threshold of 0.3 (a shift of
three tenths of a standard deviation), not Evidently's default Kolmogorov–Smirnov p-value for
small samples. Measured on the real recordings: a significance test flags any difference once it
has a few hundred rows, and every speaker's microphone differs, so unseen speakers of the same
corpus had 50 % of columns "drifted" under K-S (400 reference clips, 200 current). Through the
whole live path (gateway → sidecar → features; ~2,150 training events against ~230 events of 26
unseen speakers), normed Wasserstein scores of the same corpus stayed below 0.36 (8–9 of 19
columns above 0.2: a share of 0.42–0.47, uncomfortably close to 0.5), while 8 kHz telephone
digits (FSDD) scored 0.5–3.0 on 12 columns and drifted on 18 of 19 at 0.2. An effect size of 0.3
separates a new speaker from a new channel with a wide margin; a p-value does not.

The HTML report (a self-contained page, a few MB) is returned as bytes for the caller to store
in the lake; this module neither reads settings nor writes anywhere.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

DEFAULT_DRIFT_SHARE = 0.5
"""Dataset drift when at least half of the summary-feature columns drifted."""
NUMERIC_METHOD = "wasserstein"
"""Evidently's per-column test for numeric features (normed Wasserstein distance)."""
NUMERIC_THRESHOLD = 0.3
"""A column drifted when its normed Wasserstein distance is at least this (standard deviations)."""
MIN_ROWS = 30
"""Fewer rows than this on either side and a drift test says nothing useful."""


class NotEnoughData(ValueError):
    """The reference or the current window is too small to test for drift."""


@dataclass(frozen=True)
class ColumnDrift:
    """One column's test: its method, score and threshold, and whether it drifted."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """What one drift report found."""

    n_reference: int
    n_current: int
    drift_share_threshold: float
    drifted_columns: int
    drifted_share: float
    """Share of columns that drifted (0..1), from Evidently's DriftedColumnsCount."""
    columns: tuple[ColumnDrift, ...]
    html: bytes = field(repr=False)

    @property
    def dataset_drift(self) -> bool:
        return self.drifted_share >= self.drift_share_threshold

    def top_columns(self, n: int = 5) -> list[ColumnDrift]:
        """The drifted columns first, then the closest calls (for a short summary)."""
        return sorted(self.columns, key=lambda c: (not c.drifted, _severity(c)))[:n]


def _severity(column: ColumnDrift) -> float:
    """Lower is more drifted: p-values as they are, distances negated."""
    return column.score if _is_p_value(column.method) else -column.score


def _is_p_value(method: str) -> bool:
    return "p_value" in method.lower().replace("-", "_")


def column_drifted(method: str, score: float, threshold: float) -> bool:
    """Evidently's rule: a p-value drifts below its threshold, a distance at or above it."""
    if _is_p_value(method):
        return score < threshold
    return score >= threshold


def features_frame(
    vectors: Sequence[Sequence[float]] | np.ndarray, columns: Sequence[str]
) -> pd.DataFrame:
    """Feature vectors (one per event) as a DataFrame with the summary column names."""
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(columns):
        raise ValueError(f"expected vectors of {len(columns)} values, got shape {array.shape}")
    return pd.DataFrame(array, columns=list(columns))


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    drift_share: float = DEFAULT_DRIFT_SHARE,
    num_method: str = NUMERIC_METHOD,
    num_threshold: float = NUMERIC_THRESHOLD,
    min_rows: int = MIN_ROWS,
) -> DriftResult:
    """Run Evidently's data-drift preset on ``current`` against ``reference``.

    Both frames must have the same numeric columns. Constant columns (no spread on both sides)
    are dropped first: they cannot drift and some tests are undefined on them.
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if len(reference) < min_rows or len(current) < min_rows:
        raise NotEnoughData(
            f"drift needs at least {min_rows} rows on each side "
            f"(reference {len(reference)}, current {len(current)})"
        )
    if list(reference.columns) != list(current.columns):
        raise ValueError("reference and current must have the same columns, in the same order")
    both = pd.concat([reference, current])
    varying = [c for c in reference.columns if both[c].nunique(dropna=True) > 1]
    reference, current = reference[varying], current[varying]

    preset = DataDriftPreset(
        drift_share=drift_share, num_method=num_method, num_threshold=num_threshold
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # correlations of near-constant columns
        snapshot = Report([preset]).run(current_data=current, reference_data=reference)
    metrics = snapshot.dict()["metrics"]
    count, share = _drifted_count(metrics)
    columns = tuple(_value_drifts(metrics))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        snapshot.save_html(str(path))
        html = path.read_bytes()
    return DriftResult(
        n_reference=len(reference),
        n_current=len(current),
        drift_share_threshold=drift_share,
        drifted_columns=count,
        drifted_share=share,
        columns=columns,
        html=html,
    )


def _drifted_count(metrics: list[dict[str, Any]]) -> tuple[int, float]:
    for metric in metrics:
        if metric["config"]["type"].endswith("DriftedColumnsCount"):
            return int(metric["value"]["count"]), float(metric["value"]["share"])
    raise ValueError("Evidently's report has no DriftedColumnsCount metric")


def _value_drifts(metrics: list[dict[str, Any]]) -> list[ColumnDrift]:
    found = []
    for metric in metrics:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method = str(config.get("method", ""))
        score = float(metric["value"])
        threshold = float(config.get("threshold") or 0.0)
        found.append(
            ColumnDrift(
                config["column"], method, score, threshold, column_drifted(method, score, threshold)
            )
        )
    return found


def report_row(
    result: DriftResult,
    *,
    reference_model_version: str | None,
    window_start: datetime | None,
    window_end: datetime | None,
    html_uri: str | None,
    created_at: datetime | None = None,
    report_id: str | None = None,
) -> dict[str, Any]:
    """One ``monitoring.drift_reports`` row for a result."""
    created = created_at or datetime.now(UTC)
    return {
        "report_id": report_id or uuid.uuid4().hex,
        "created_at": created,
        "reference_model_version": reference_model_version,
        "window_start": window_start,
        "window_end": window_end,
        "n_reference": result.n_reference,
        "n_current": result.n_current,
        "drift_share": result.drifted_share,
        "drifted_columns": result.drifted_columns,
        "dataset_drift": result.dataset_drift,
        "columns_json": json.dumps(
            [
                {
                    "column": c.column,
                    "method": c.method,
                    "score": c.score,
                    "threshold": c.threshold,
                    "drifted": c.drifted,
                }
                for c in result.columns
            ]
        ),
        "html_uri": html_uri,
        "report_date": created.date(),
    }


def report_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows from :func:`report_row` as an Arrow table of the drift-reports schema."""
    return pa.Table.from_pylist(rows, schema=schema)
