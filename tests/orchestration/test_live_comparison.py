"""The live comparison asset over real gold.predictions rows, materialized in process."""

from __future__ import annotations

import dagster as dg
from live_rows import segments
from materialize import metadata_of, run_assets
from real_lake import LakeEnv

from lake_schemas import PREDICTIONS
from orchestration.defs.monitoring.live_comparison import LIVE_MODEL_COMPARISON
from sonolake import wiring


def test_asset_reports_agreement_accuracy_and_a_plot(empty_env: LakeEnv) -> None:
    settings = empty_env.settings
    lake = wiring.lake(settings)
    truth = ["yes", "no", "stop", None]
    rows = segments(truth, ["yes", "no", "go", "up"], ["yes", "no", "stop", "up"], ("1", "2"))
    lake.append(PREDICTIONS, rows, writer="test")
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, [LIVE_MODEL_COMPARISON])
    metadata = metadata_of(result, LIVE_MODEL_COMPARISON)
    assert (metadata["champion_version"], metadata["shadow_version"]) == ("1", "2")
    assert metadata["segments"] == 4 and metadata["labelled_segments"] == 3
    assert metadata["agreement"] == 0.75
    assert (metadata["champion_accuracy"], metadata["shadow_accuracy"]) == (2 / 3, 1.0)
    assert "data:image/png;base64," in metadata["live_accuracy_per_class"]


def test_asset_says_why_it_skipped_without_shadow_rows(empty_env: LakeEnv) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(empty_env.settings, instance, [LIVE_MODEL_COMPARISON])
    assert "no live segment" in metadata_of(result, LIVE_MODEL_COMPARISON)["skipped"]
