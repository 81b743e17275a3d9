"""gold.audio_features from a real landed lake: one vector per event, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import numpy as np
from lake_fixture import LakeEnv
from materialize import metadata_of, run_assets

from features import FEATURE_VERSION, SUMMARY_COLUMNS, summary_features
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES, Lake
from orchestration.event_audio import CHUNK_COLUMNS, EVENT_COLUMNS, event_segments


def test_features_for_the_days_events_then_skip_them(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = Lake(settings.lake_root, catalog_file=settings.catalog_file)
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


def test_reassembled_event_audio_matches_the_sidecars_measurements(small_lake: LakeEnv) -> None:
    """The event audio put back together from bronze has the duration and level silver says."""
    settings = small_lake.settings
    lake = Lake(settings.lake_root, catalog_file=settings.catalog_file)
    events = lake.read(AUDIO_EVENTS, columns=[*EVENT_COLUMNS, "rms_dbfs"])
    chunks = lake.read(AUDIO_CHUNKS, columns=CHUNK_COLUMNS)
    by_id = {r["event_id"]: r for r in events.to_pylist()}
    segments = list(event_segments(events, chunks))
    assert len(segments) == events.num_rows
    for segment in segments:
        row = by_id[segment.event_id]
        assert abs(segment.audio_16k.size / 16000 - row["duration_s"]) < 0.002
        rms = summary_features(segment.audio_16k)[SUMMARY_COLUMNS.index("rms_dbfs")]
        assert abs(rms - row["rms_dbfs"]) < 0.5, "same audio, same level (dBFS)"


def test_partition_without_events_writes_nothing(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(settings, instance, ["gold/audio_features"], partition_key="2025-01-01")
    assert metadata_of(result, "gold/audio_features")["events_in_partition"] == 0
    assert datetime.now(UTC).year >= 2025
