"""Rows of ``monitoring.model_evaluations``: every evaluation, promotion, rejection and rollback.

The registry appends one row per event, so analysts can answer "which model served when, and
why was it promoted" with SQL over the lake, independently of MLflow.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa


@dataclass(frozen=True)
class EvaluationRecord:
    """One row of ``monitoring.model_evaluations``: an evaluation, promotion or rollback."""

    model_version: str
    artifact: str
    dataset: str
    action: str
    """evaluate | promote | reject | rollback"""
    accuracy: float | None = None
    macro_f1: float | None = None
    per_class_f1: Mapping[str, float] | None = None
    latency_us_p50: float | None = None
    latency_us_p99: float | None = None
    windows_per_s: float | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    gate_passed: bool | None = None
    reason: str | None = None


def evaluation_table(
    model_name: str, records: Sequence[EvaluationRecord], at: datetime
) -> pa.Table:
    """The records as an Arrow table with the lake table's schema (one fresh id per row)."""
    from lake_schemas.tables import MODEL_EVALUATIONS

    rows = [
        {
            "evaluation_id": uuid.uuid4().hex,
            "evaluated_at": at,
            "model_name": model_name,
            "model_version": r.model_version,
            "artifact": r.artifact,
            "dataset": r.dataset,
            "accuracy": r.accuracy,
            "macro_f1": r.macro_f1,
            "per_class_f1_json": None
            if r.per_class_f1 is None
            else json.dumps(dict(r.per_class_f1), sort_keys=True),
            "latency_us_p50": r.latency_us_p50,
            "latency_us_p99": r.latency_us_p99,
            "windows_per_s": r.windows_per_s,
            "action": r.action,
            "champion_before": r.champion_before,
            "champion_after": r.champion_after,
            "gate_passed": r.gate_passed,
            "reason": r.reason,
            "evaluation_date": at.date(),
        }
        for r in records
    ]
    return pa.Table.from_pylist(rows, schema=MODEL_EVALUATIONS.schema)
