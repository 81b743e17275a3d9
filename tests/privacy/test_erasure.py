"""Per-device erasure on a real lake: real recordings landed by the real sidecar, real deletes.

Proof is read from the files: after ``sonolake erase``, no Parquet file under the lake and no
spool segment holds the device's id or any of its audio chunks, the other devices are intact,
and the audit row names the device only by its SHA-256.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from lake_traces import local_parquet_traces, spool_traces, unique_pcm
from real_lake import (
    _session_records,
    _write_spool,
    isolated_settings,
    land_clips,
    small_lake_clips,
)

from lake_schemas import (
    AUDIO_CHUNKS,
    AUDIO_EVENTS,
    AUDIO_FEATURES,
    DEAD_LETTERS,
    ERASURES,
    PREDICTIONS,
    SESSIONS,
    Lake,
)
from lake_schemas.erasure import device_hash, erasure_targets, plan_erasure
from models.lake_features import features_of_day
from sonolake import wiring
from sonolake.cli import main
from sonolake.settings import Settings
from streaming.replay import group_by_speaker
from streaming.sidecar.driver import Sidecar, SidecarConfig


def test_every_table_with_device_data_is_a_target() -> None:
    targets = {t.spec.name: t.column for t in erasure_targets()}
    assert targets[AUDIO_CHUNKS.name] == "device_id"
    assert targets[AUDIO_EVENTS.name] == "device_id"
    assert targets[SESSIONS.name] == "device_id"
    assert targets[AUDIO_FEATURES.name] == "device_id"
    assert targets[DEAD_LETTERS.name] == "session_id"  # erased by the device's sessions
    assert PREDICTIONS.name in targets
    assert ERASURES.name not in targets  # the audit keeps a hash, not the id
    order = [t.column for t in erasure_targets()]
    assert order == sorted(order, key=("device_id", "session_id", "event_id").index)


def _settings(root: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = isolated_settings(root)
    for name, value in {
        "SONOLAKE_STATE_DIR": str(settings.state_dir),
        "SONOLAKE_LAKE_URI": settings.lake_uri,
        "SONOLAKE_MLFLOW_URI": str(settings.mlflow_uri),
    }.items():
        monkeypatch.setenv(name, value)
    return settings


def _clips(shared_data: Path) -> list:
    return small_lake_clips(
        shared_data, train_speakers=2, heldout_speakers=1, per_speaker=2, silence_clips=0
    )


def _with_gold_and_dead_letter(lake: Lake, device: str) -> None:
    """Gold features through the production function, and one dead letter of the device."""
    days = set(lake.read(AUDIO_EVENTS, columns=["event_date"]).column("event_date").to_pylist())
    for day in days:
        found = features_of_day(lake, day)
        lake.merge_insert(AUDIO_FEATURES, found.rows, writer="dagster:gold/audio_features")
    chunk = lake.read(AUDIO_CHUNKS, filter=[("device_id", "=", device)]).slice(5, 1).to_pylist()[0]
    now = datetime.now(UTC)
    dead = {
        "source": "segment-x",
        "record_index": 7,
        "session_id": chunk["session_id"],
        "seq": chunk["seq"],
        "reason": "conflicting payload for a sequence already landed",
        "quarantined_at": now,
        "payload": chunk["pcm"],
        "ingest_date": now.date(),
    }
    lake.append(DEAD_LETTERS, pa.Table.from_pylist([dead], DEAD_LETTERS.schema), writer="sidecar")


@pytest.mark.integration
def test_erase_removes_the_device_from_every_file(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings(tmp_path, monkeypatch)
    lake = land_clips(settings, _clips(shared_data))
    devices = sorted(set(lake.read(SESSIONS).column("device_id").to_pylist()))
    assert len(devices) == 3
    device, others = devices[0], devices[1:]
    _with_gold_and_dead_letter(lake, device)
    lake.compact(AUDIO_CHUNKS)  # superseded files that hold the device, as maintenance leaves
    chunks = lake.read(AUDIO_CHUNKS)
    pcm = unique_pcm(chunks, device)
    assert pcm and local_parquet_traces(Path(settings.lake_root), device, pcm)
    before = {spec.name: lake.read(spec).num_rows for spec in (AUDIO_CHUNKS, AUDIO_EVENTS)}
    plan = plan_erasure(lake, device)
    assert plan.rows[DEAD_LETTERS.name] == 1 and plan.rows[AUDIO_FEATURES.name] > 0

    assert main(["erase", "--device", device]) == 2, "a dry run without --yes exits 2"
    assert "dry run" in capsys.readouterr().err
    assert lake.read(AUDIO_CHUNKS, filter=[("device_id", "=", device)]).num_rows > 0

    assert main(["erase", "--device", device, "--yes"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows_removed"] == {k: v for k, v in plan.rows.items() if v}
    assert summary["files_vacuumed"] > 0

    fresh = wiring.lake(settings)
    assert local_parquet_traces(Path(settings.lake_root), device, pcm) == {}
    for target in erasure_targets():
        if fresh.exists(target.spec) and "device_id" in target.spec.schema.names:
            left = fresh.read(target.spec, columns=["device_id"]).column("device_id").to_pylist()
            assert device not in left, target.spec.name
    for spec in (AUDIO_CHUNKS, AUDIO_EVENTS):  # the other devices are untouched
        assert fresh.read(spec).num_rows == before[spec.name] - plan.rows[spec.name]
        kept = set(fresh.read(spec, columns=["device_id"]).column("device_id").to_pylist())
        assert kept == set(others)
    sql = fresh.connect_sql().execute(
        "select count(*) from bronze.audio_chunks where device_id = ?", [device]
    )
    assert sql.fetchall() == [(0,)]

    audit = fresh.read(ERASURES).to_pylist()
    assert len(audit) == 1 and audit[0]["device_sha256"] == device_hash(device)
    assert json.loads(audit[0]["tables_json"]) == summary["rows_removed"]
    assert audit[0]["requested_by"] == "cli" and audit[0]["vacuum_retention_hours"] == 0

    assert main(["erase", "--device", device, "--yes"]) == 1, "nothing left: unknown device"
    assert "no rows in the lake" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize(
    ("stop_at", "staged_rows_reused"),
    [
        # Nothing committed: the replay runs the pipeline again (the audio went with the
        # process) over the segments the erasure rewrote.
        ("staged", False),
        # Bronze and events took the batch: the replay commits the staged predictions and
        # sessions, and the tombstone drops the erased device's rows from them.
        ("committed:silver.audio_events", True),
    ],
)
def test_a_batch_staged_before_the_erasure_does_not_bring_the_rows_back(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop_at: str,
    staged_rows_reused: bool,
) -> None:
    """The sidecar staged a batch when the erasure ran (and committed part of it, or nothing);
    its replay afterwards lands the other devices and none of the erased device's rows."""
    settings = _settings(tmp_path, monkeypatch)
    start = datetime.now(UTC) - timedelta(minutes=30)
    records = []
    for speaker, group in group_by_speaker(_clips(shared_data)):
        records += _session_records(speaker, group, start, "linear16")
    asyncio.run(_write_spool(settings.spool_path, records))
    device = sorted({r.device_id for r in records})[0]
    lake = wiring.lake(settings)
    config = SidecarConfig(spool_dir=settings.spool_path, state_dir=settings.state_path / "sidecar")

    class Interrupted(Exception):
        pass

    def stop(phase: str, batch: int) -> None:
        if phase == stop_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        Sidecar(lake, config, on_phase=stop).land_once()
    assert spool_traces(settings.spool_path, device)

    assert main(["erase", "--device", device, "--yes"]) == 0
    assert spool_traces(settings.spool_path, device) == []

    replay = Sidecar(wiring.lake(settings), config)
    report = replay.land_once()
    assert report is not None and report.replayed
    assert report.reused_staged is staged_rows_reused
    while replay.land_once() is not None:
        pass
    fresh = wiring.lake(settings)
    landed = set(fresh.read(AUDIO_CHUNKS, columns=["device_id"]).column("device_id").to_pylist())
    assert landed == {r.device_id for r in records} - {device}
    assert device not in fresh.read(SESSIONS).column("device_id").to_pylist()
    assert device not in fresh.read(AUDIO_EVENTS).column("device_id").to_pylist()
    assert local_parquet_traces(Path(settings.lake_root), device, set()) == {}
    assert spool_traces(settings.spool_path, device) == []


def test_unknown_device_and_empty_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _settings(tmp_path, monkeypatch)
    assert main(["erase", "--device", "nobody", "--yes"]) == 1
    assert "'nobody' has no rows in the lake" in capsys.readouterr().err
    assert main(["erase", "--device", " "]) == 2


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["d1"], ["\"device_id\" IN ('d1')"]),
        (["it's"], ["\"device_id\" IN ('it''s')"]),  # quotes are doubled, never closed
        ([f"s{i}" for i in range(501)], 2),  # at most PREDICATE_CHUNK values per predicate
    ],
)
def test_delete_predicates(values: list[str], expected: list[str] | int) -> None:
    from lake_schemas.erasure import delete_predicates

    predicates = delete_predicates("device_id", values)
    if isinstance(expected, int):
        assert len(predicates) == expected
    else:
        assert predicates == expected


@pytest.mark.integration
def test_the_erase_devices_asset_erases_a_batch_of_requests(
    shared_data: Path, tmp_path: Path
) -> None:
    import dagster as dg

    from orchestration.defs.privacy.assets import erasures
    from orchestration.resources import LakeResource, PlatformPaths

    settings = isolated_settings(tmp_path)
    clips = small_lake_clips(
        shared_data, train_speakers=3, heldout_speakers=0, per_speaker=1, silence_clips=0
    )
    lake = land_clips(settings, clips)
    devices = sorted(set(lake.read(SESSIONS).column("device_id").to_pylist()))
    resources = {
        "lake": LakeResource(root=settings.lake_root),
        "paths": PlatformPaths(
            state_dir=str(settings.state_path),
            spool_dir=str(settings.spool_path),
            data_dir=str(shared_data),
        ),
    }
    config = {"ops": {"monitoring__erasures": {"config": {"device_ids": devices[:2]}}}}
    assert dg.materialize([erasures], resources=resources, run_config=config).success
    fresh = wiring.lake(settings)
    assert set(fresh.read(AUDIO_CHUNKS).column("device_id").to_pylist()) == {devices[2]}
    audit = fresh.read(ERASURES).to_pylist()
    assert sorted(row["device_sha256"] for row in audit) == sorted(map(device_hash, devices[:2]))
    assert all(row["requested_by"].startswith("dagster:") for row in audit)
    assert spool_traces(settings.spool_path, devices[0]) == []
