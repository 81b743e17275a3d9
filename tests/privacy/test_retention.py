"""Bronze PCM retention on a real lake: old ingest days go, partition by partition; silver stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from real_lake import isolated_settings, land_clips, small_lake_clips

from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS
from lake_schemas.retention import expire_partitions, partitions
from orchestration.defs.privacy.assets import bronze_pcm_retention
from orchestration.resources import LakeResource, RetentionPolicy
from sonolake import wiring


@pytest.mark.integration
def test_old_partitions_go_and_silver_keeps_its_rows(shared_data: Path, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    clips = small_lake_clips(
        shared_data, train_speakers=1, heldout_speakers=0, per_speaker=2, silence_clips=0
    )
    now = datetime.now(UTC)
    land_clips(settings, clips, start=now - timedelta(days=40))
    lake = land_clips(settings, clips, start=now - timedelta(minutes=30))
    days = partitions(lake)
    assert len(days) >= 2
    old = [d for d in days if d < now.date() - timedelta(days=30)]
    events_before = lake.read(AUDIO_EVENTS).num_rows
    recent_rows = lake.read(AUDIO_CHUNKS, filter=[("ingest_date", ">=", days[-1])]).num_rows

    with pytest.raises(ValueError, match="keep_days"):
        expire_partitions(lake, 0, now.date())
    result = expire_partitions(lake, 30, now.date(), vacuum_retention_hours=0)
    assert sorted(result.removed) == [d.isoformat() for d in old]
    assert all(rows > 0 for rows in result.removed.values())
    assert partitions(lake) == [d for d in days if d not in old]
    assert lake.read(AUDIO_CHUNKS).num_rows == recent_rows
    assert lake.read(AUDIO_EVENTS).num_rows == events_before  # silver keeps every event
    bronze_dir = Path(lake.uri(AUDIO_CHUNKS))
    for day in old:  # the files themselves are gone once vacuumed
        assert not list(bronze_dir.glob(f"ingest_date={day.isoformat()}/*.parquet"))

    again = expire_partitions(lake, 30, now.date())
    assert again.removed == {}, "a second run has nothing left to remove"

    resources = {
        "lake": LakeResource(root=settings.lake_root),
        "retention": RetentionPolicy(bronze_pcm_retention_days=1),
    }
    run = dg.materialize([bronze_pcm_retention], resources=resources)
    assert run.success
    assert partitions(wiring.lake(settings)) == [
        d for d in days if d >= now.date() - timedelta(days=1)
    ]
