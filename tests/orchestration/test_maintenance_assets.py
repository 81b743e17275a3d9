"""The nightly maintenance asset on a lake the real sidecar landed: compaction, then the
closed partition z-ordered by device, then vacuum; same rows, per-device runs together."""

from __future__ import annotations

import dagster as dg
from deltalake import DeltaTable
from materialize import metadata_of, run_assets
from real_lake import LakeEnv

from lake_schemas import AUDIO_EVENTS
from orchestration.defs.maintenance.assets import maintenance_key
from sonolake import wiring


def test_maintenance_clusters_the_named_day_of_events_by_device(small_lake: LakeEnv) -> None:
    settings = small_lake.settings
    lake = wiring.lake(settings)
    before = lake.read(AUDIO_EVENTS)
    day = str(before.column("event_date")[0])
    key = maintenance_key(AUDIO_EVENTS)
    op = "__".join(key.path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_assets(
            settings,
            instance,
            [key],
            run_config={"ops": {op: {"config": {"cluster_partition": day}}}},
        )
    assert result.success
    metadata = metadata_of(result, key)
    assert str(metadata["clustering"]).startswith(
        f"{{'event_date': '{day}'}}: cluster by device_id"
    )
    after = wiring.lake(settings).read(AUDIO_EVENTS)
    assert sorted(after.column("event_id").to_pylist()) == sorted(
        before.column("event_id").to_pylist()
    )
    table = DeltaTable(lake.uri(AUDIO_EVENTS))
    for fragment in table.to_pyarrow_dataset([("event_date", "=", day)]).get_fragments():
        devices = fragment.to_table(columns=["device_id"]).column("device_id").to_pylist()
        assert devices == sorted(devices)
