"""Champion vs challenger on live traffic: agreement, and accuracy where ground truth arrived.

The gateway answers every segment with the champion and, when a challenger exists, scores the
same segment with it on the side; both land in ``gold.predictions`` (``role`` champion /
shadow) under the same ``(session_id, result_index)``. Pairing on that key compares the two
versions on exactly the same live audio — no resampling, no re-segmentation, the audio the
devices really sent. Only final results are compared (a shadow scores finals only).

Ground truth is the ``label`` the segment's chunks carried (a device's or replay tool's
``Label`` message); words outside a model's vocabulary count as ``_unknown_``, as in training
and offline evaluation (:func:`models.dataset.label_index`). The Dagster asset of live
comparisons and the promotion gate's live rule both read :func:`compare_live`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lake_schemas.tables import LIVE_RUN_ID, PREDICTIONS, ROLE_CHAMPION, ROLE_SHADOW
from models.dataset import LABELS, label_index

_KEY = ("session_id", "result_index")
_COLUMNS = ["run_id", "session_id", "result_index", "is_final", "role", "model_version"]
_COLUMNS += ["predicted_label", "label"]


@dataclass(frozen=True)
class LiveComparison:
    """One champion version against one shadow version on the segments both scored."""

    champion_version: str
    shadow_version: str
    segments: int
    """Final segments both versions scored."""
    agreement: float
    """Share of those segments where both predicted the same label (0..1)."""
    labelled: int
    """Of those, segments with a ground-truth label."""
    champion_accuracy: float | None
    """Top-1 accuracy of the champion on the labelled segments (None when there are none)."""
    shadow_accuracy: float | None
    per_label: dict[str, tuple[int, int, int]]
    """Ground-truth class → (segments, champion correct, shadow correct)."""

    @property
    def accuracy_change(self) -> float | None:
        """Shadow minus champion accuracy on the same labelled segments (negative: a loss)."""
        if self.champion_accuracy is None or self.shadow_accuracy is None:
            return None
        return self.shadow_accuracy - self.champion_accuracy

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_change": self.accuracy_change}


def paired_finals(predictions: pa.Table) -> pa.Table:
    """Champion and shadow final results of the same live segments, one row per segment:
    ``session_id, result_index, label, champion_version, champion_label, shadow_version,
    shadow_label``."""
    table = predictions.select(_COLUMNS)
    live = pc.and_(pc.equal(table["run_id"], LIVE_RUN_ID), pc.fill_null(table["is_final"], False))
    table = table.filter(live)

    def side(role: str, prefix: str) -> pa.Table:
        rows = table.filter(pc.equal(table["role"], role))
        return pa.table(
            {
                "session_id": rows["session_id"],
                "result_index": rows["result_index"],
                **({"label": rows["label"]} if role == ROLE_CHAMPION else {}),
                f"{prefix}_version": rows["model_version"],
                f"{prefix}_label": rows["predicted_label"],
            }
        )

    return side(ROLE_CHAMPION, "champion").join(
        side(ROLE_SHADOW, "shadow"), keys=list(_KEY), join_type="inner"
    )


def compare_live(predictions: pa.Table, labels: Sequence[str] = LABELS) -> list[LiveComparison]:
    """One :class:`LiveComparison` per (champion version, shadow version) seen live."""
    pairs = paired_finals(predictions).to_pylist()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in pairs:
        if row["champion_version"] is None or row["shadow_version"] is None:
            continue
        groups.setdefault((row["champion_version"], row["shadow_version"]), []).append(row)
    out = []
    for (champion, shadow), rows in sorted(groups.items()):
        agree = sum(r["champion_label"] == r["shadow_label"] for r in rows)
        per_label: dict[str, list[int]] = {}
        for r in rows:
            if r["label"] is None:
                continue
            truth = labels[label_index(r["label"], labels)]
            counts = per_label.setdefault(truth, [0, 0, 0])
            counts[0] += 1
            counts[1] += r["champion_label"] == truth
            counts[2] += r["shadow_label"] == truth
        labelled = sum(c[0] for c in per_label.values())
        out.append(
            LiveComparison(
                champion_version=champion,
                shadow_version=shadow,
                segments=len(rows),
                agreement=agree / len(rows),
                labelled=labelled,
                champion_accuracy=(
                    sum(c[1] for c in per_label.values()) / labelled if labelled else None
                ),
                shadow_accuracy=(
                    sum(c[2] for c in per_label.values()) / labelled if labelled else None
                ),
                per_label={k: (v[0], v[1], v[2]) for k, v in sorted(per_label.items())},
            )
        )
    return out


def live_evidence(lake: Any, candidate: str, champion: str) -> LiveComparison | None:
    """What the lake's live traffic says about ``candidate`` shadowing ``champion`` (or None)."""
    table = lake.read(PREDICTIONS, columns=_COLUMNS, filter=pc.field("run_id") == LIVE_RUN_ID)
    for comparison in compare_live(table):
        if (comparison.champion_version, comparison.shadow_version) == (champion, candidate):
            return comparison
    return None


def save_comparison_png(comparison: LiveComparison, path: Path | str) -> Path:
    """Per-class live accuracy of both versions (bars), with the totals in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = list(comparison.per_label)
    totals = np.array([comparison.per_label[c][0] for c in classes], dtype=float)
    safe = np.maximum(totals, 1)
    champion = np.array([comparison.per_label[c][1] for c in classes]) / safe
    shadow = np.array([comparison.per_label[c][2] for c in classes]) / safe
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    x = np.arange(len(classes))
    ax.bar(x - 0.2, champion, 0.4, label=f"champion v{comparison.champion_version}")
    ax.bar(x + 0.2, shadow, 0.4, label=f"shadow v{comparison.shadow_version}")
    ax.set_xticks(x, [f"{c}\n(n={int(n)})" for c, n in zip(classes, totals, strict=True)])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("live accuracy")
    fmt = "{:.3f}".format
    ax.set_title(
        f"{comparison.segments} segments, agreement {comparison.agreement:.3f}; labelled "
        f"{comparison.labelled}: champion "
        f"{fmt(comparison.champion_accuracy) if comparison.champion_accuracy is not None else '-'}"
        f", shadow "
        f"{fmt(comparison.shadow_accuracy) if comparison.shadow_accuracy is not None else '-'}",
        fontsize=8,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
