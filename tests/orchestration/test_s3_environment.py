"""The ``s3`` environment against a real S3 API (moto's server): same graph, S3 resources.

Credentials reach the resources only as ``EnvVar("SONOLAKE_AWS_*")``; dbt gets the region and
endpoint through ``--vars`` and the credentials through its profile's lake plugin, which reads
the same ``SONOLAKE_AWS_*`` variables (nothing is put into ``os.environ`` for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from materialize import check_results, run_assets
from real_lake import isolated_settings, land_clips, small_lake_clips
from support import MOTO_KEY_ID, MOTO_SECRET, moto_server

from lake_schemas import AUDIO_EVENTS, AUDIO_FEATURES
from orchestration import OBSERVE_JOB, build_definitions
from orchestration.resources import S3LakeResource
from sonolake import wiring

BUCKET = "sonolake-orchestration"
KEY_ID, SECRET = MOTO_KEY_ID, MOTO_SECRET


@pytest.fixture
def moto_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with moto_server(tmp_path, BUCKET) as endpoint:
        monkeypatch.setenv("SONOLAKE_AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("SONOLAKE_AWS_SECRET_ACCESS_KEY", SECRET)
        yield endpoint


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.integration
def test_the_graph_runs_on_an_s3_lake(
    moto_endpoint: str, shared_data: Path, tmp_path: Path
) -> None:
    settings = isolated_settings(
        tmp_path,
        environment="s3",
        lake_uri=f"s3://{BUCKET}/lake",
        s3_endpoint_url=moto_endpoint,
        aws_allow_http=True,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    clips = small_lake_clips(
        shared_data, train_speakers=2, heldout_speakers=1, per_speaker=3, silence_clips=0
    )
    land_clips(settings, clips)
    lake = wiring.lake(settings)
    events = lake.read(AUDIO_EVENTS)
    assert events.num_rows == len(clips)

    resource = build_definitions(settings).resources["lake"]
    assert isinstance(resource, S3LakeResource)
    with dg.DagsterInstance.ephemeral() as instance:
        observed = run_assets(settings, instance, [], job_name=OBSERVE_JOB)
        assert observed.success
        assert all(e.passed for e in check_results(observed).values())

        day = datetime.now(UTC).date().isoformat()
        assert run_assets(settings, instance, ["gold/audio_features"], partition_key=day).success
        assert lake.read(AUDIO_FEATURES).num_rows == events.num_rows

        graph = build_definitions(settings).resolve_asset_graph()
        analytics = [k for k in graph.get_all_asset_keys() if k.path[0] == "analytics"]
        dbt = run_assets(settings, instance, analytics)
        assert dbt.success, "dbt read the Delta sources from S3"

    # reports (drift HTML) go to the lake's bucket through dagster-aws's S3 client
    with dg.build_resources({"lake": resource}) as resources:  # EnvVar secrets resolved here
        lake_resource = resources.lake
        location = lake_resource.save_file("monitoring/drift_html/probe.html", b"<p/>", "text/html")
        assert location == f"s3://{BUCKET}/lake/monitoring/drift_html/probe.html"
        assert lake_resource.read_file(location) == b"<p/>"
