"""models.drift on generated feature distributions: what drifts, what does not, what is stored."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from features import SUMMARY_COLUMNS
from lake_schemas import DRIFT_REPORTS
from models.drift import (
    DriftResult,
    NotEnoughData,
    column_drifted,
    detect_drift,
    features_frame,
    report_row,
    report_table,
)

N_COLUMNS = len(SUMMARY_COLUMNS)


def _frame(rows: int, shift: np.ndarray | float = 0.0, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    scales = np.linspace(1.0, 50.0, N_COLUMNS)  # columns in different units, like dBFS and Hz
    return features_frame(
        rng.normal(0.0, 1.0, (rows, N_COLUMNS)) * scales + shift * scales, SUMMARY_COLUMNS
    )


SHIFTED = N_COLUMNS // 2 + 1
"""Columns moved by one standard deviation in the drifted sample (just over half)."""


@pytest.fixture(scope="module")
def calm() -> DriftResult:
    return detect_drift(_frame(400, seed=1), _frame(300, seed=2))


@pytest.fixture(scope="module")
def shifted() -> DriftResult:
    shift = np.zeros(N_COLUMNS)
    shift[:SHIFTED] = 1.0
    return detect_drift(_frame(400, seed=1), _frame(300, shift, seed=2))


def test_same_distribution_does_not_drift(calm: DriftResult) -> None:
    assert not calm.dataset_drift
    assert calm.drifted_share < 0.2
    assert len(calm.columns) == N_COLUMNS
    assert b"<!DOCTYPE html>" in calm.html[:200] and len(calm.html) > 10_000


def test_shifted_columns_drift_in_proportion(shifted: DriftResult) -> None:
    drifted = {c.column for c in shifted.columns if c.drifted}
    assert drifted == set(SUMMARY_COLUMNS[:SHIFTED])
    assert shifted.drifted_columns == len(drifted)
    assert shifted.drifted_share == pytest.approx(SHIFTED / N_COLUMNS)
    assert shifted.dataset_drift
    assert shifted.top_columns(3)[0].drifted


def test_drift_share_threshold_decides_dataset_drift(shifted: DriftResult) -> None:
    assert not replace(shifted, drift_share_threshold=0.6).dataset_drift
    assert replace(shifted, drift_share_threshold=0.5).dataset_drift


def test_too_few_rows_is_refused() -> None:
    with pytest.raises(NotEnoughData, match="at least 30 rows"):
        detect_drift(_frame(400), _frame(10))


@pytest.mark.parametrize(
    ("method", "score", "threshold", "drifted"),
    [
        ("K-S p_value", 0.01, 0.05, True),
        ("K-S p_value", 0.20, 0.05, False),
        ("Wasserstein distance (normed)", 0.25, 0.2, True),
        ("Wasserstein distance (normed)", 0.10, 0.2, False),
        ("Wasserstein distance (normed)", 0.20, 0.2, True),
    ],
)
def test_column_rule(method: str, score: float, threshold: float, drifted: bool) -> None:
    assert column_drifted(method, score, threshold) is drifted


def test_report_row_fits_the_lake_table(shifted: DriftResult) -> None:
    result = shifted
    now = datetime.now(UTC)
    row = report_row(
        result,
        reference_model_version="7",
        window_start=now,
        window_end=now,
        html_uri="/lake/monitoring/drift_html/x.html",
        created_at=now,
    )
    table = report_table([row], DRIFT_REPORTS.schema)
    assert table.schema.equals(DRIFT_REPORTS.schema)
    assert table.column("dataset_drift").to_pylist() == [True]
    assert table.column("n_current").to_pylist() == [300]
    assert isinstance(table, pa.Table)
