"""gold.audio_features from a real landed lake: one vector per event, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import numpy as np
from materialize import metadata_of, run_assets
from real_lake import LakeEnv

from features import FEATURE_VERSION, SUMMARY_COLUMNS
from lake_schemas import AUDIO_EVENTS, AUDIO_FEATURES
from sonolake import wiring


def test_features_for_the_days_events_then_skip_them(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = wiring.lake(settings)
    events = lake.read(AUDIO_EVENTS)
    days = sorted({d.isoformat() for d in events.column("event_date").to_pylist()})
    with dg.DagsterInstance.ephemeral() as instance:
        for day in days:
            first = run_assets(settings, instance, ["gold/audio_features"], partition_key=day)
            assert first.success
        meta = metadata_of(first, "gold/audio_features")
        assert meta["skipped_existing"] == 0 and meta["missing_audio"] == 0

        features = lake.read(AUDIO_FEATURES)
        assert features.num_rows == events.num_rows
        assert set(features.column("event_id").to_pylist()) == set(
            events.column("event_id").to_pylist()
        )
        assert set(features.column("feature_version").to_pylist()) == {FEATURE_VERSION}
        vectors = np.asarray(features.column("features").to_pylist())
        assert vectors.shape == (events.num_rows, len(SUMMARY_COLUMNS))
        assert np.isfinite(vectors).all()

        again = run_assets(settings, instance, ["gold/audio_features"], partition_key=days[-1])
        meta = metadata_of(again, "gold/audio_features")
        assert meta["computed"] == 0 and meta["skipped_existing"] > 0
        assert lake.read(AUDIO_FEATURES).num_rows == events.num_rows


def test_partition_without_events_writes_nothing(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, ["gold/audio_features"], partition_key="2025-01-01")
    assert metadata_of(result, "gold/audio_features")["events_in_partition"] == 0
    assert datetime.now(UTC).year >= 2025
