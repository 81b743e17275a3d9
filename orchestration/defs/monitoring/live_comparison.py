"""live_model_comparison: champion vs shadow-scored challenger on the same live segments.

The comparison itself is :func:`models.live_comparison.compare_live` over ``gold.predictions``;
this asset only reads the table, draws each pair of versions' per-class live accuracy and puts
the figures (agreement, labelled segments, accuracy of each, the change) in its metadata, where
the UI plots them across materializations. The promotion gate reads the same comparison when
``SONOLAKE_PROMOTION_MIN_LIVE_SEGMENTS`` asks for live evidence.
"""

import base64
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from lake_schemas.tables import LIVE_RUN_ID, PREDICTIONS
from models.live_comparison import LiveComparison, compare_live, save_comparison_png
from orchestration.keys import LIVE_MODEL_COMPARISON, table_key
from orchestration.resources import LakeResource, ModelRegistryResource


def _table_markdown(comparisons: list[LiveComparison]) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [
        "| champion | shadow | segments | agreement | labelled | champion acc. | shadow acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c.champion_version} | {c.shadow_version} | {c.segments} | {c.agreement:.3f} | "
        f"{c.labelled} | {fmt(c.champion_accuracy)} | {fmt(c.shadow_accuracy)} |"
        for c in comparisons
    ]
    return "\n".join(lines)


def _plot_markdown(comparison: LiveComparison) -> str:
    with tempfile.TemporaryDirectory() as folder:
        png = save_comparison_png(comparison, Path(folder) / "live.png")
        data = base64.b64encode(png.read_bytes()).decode()
    return f"![live accuracy per class](data:image/png;base64,{data})"


@dg.asset(
    key=LIVE_MODEL_COMPARISON,
    deps=[table_key(PREDICTIONS)],
    group_name="monitoring",
    kinds={"delta", "python"},
    description="Champion vs the shadow-scored challenger on the same live segments: agreement, "
    "and accuracy of each where the segment carried a ground-truth label.",
)
def live_model_comparison(
    context: dg.AssetExecutionContext, lake: LakeResource, registry: ModelRegistryResource
) -> dg.MaterializeResult:
    opened = lake.open()
    predictions = opened.read(PREDICTIONS, filter=[("run_id", "=", LIVE_RUN_ID)])
    comparisons = compare_live(predictions)
    if not comparisons:
        return dg.MaterializeResult(
            metadata={"skipped": "no live segment was shadow-scored yet (register a challenger)"}
        )
    aliases = registry.open(opened).aliases()
    current = [
        c
        for c in comparisons
        if (c.champion_version, c.shadow_version)
        == (aliases.get("champion"), aliases.get("challenger"))
    ]
    shown = current[0] if current else max(comparisons, key=lambda c: c.segments)
    context.log.info(
        f"v{shown.shadow_version} shadowing v{shown.champion_version}: {shown.segments} "
        f"segments, agreement {shown.agreement:.3f}, {shown.labelled} labelled"
    )
    metadata: dict[str, Any] = {
        "champion_version": shown.champion_version,
        "shadow_version": shown.shadow_version,
        "segments": dg.MetadataValue.int(shown.segments),
        "agreement": dg.MetadataValue.float(shown.agreement),
        "labelled_segments": dg.MetadataValue.int(shown.labelled),
        "versions": dg.MetadataValue.md(_table_markdown(comparisons)),
        "live_accuracy_per_class": dg.MetadataValue.md(_plot_markdown(shown)),
    }
    for name, value in (
        ("champion_accuracy", shown.champion_accuracy),
        ("shadow_accuracy", shown.shadow_accuracy),
        ("accuracy_change", shown.accuracy_change),
    ):
        if value is not None:
            metadata[name] = dg.MetadataValue.float(value)
    return dg.MaterializeResult(metadata=metadata)
