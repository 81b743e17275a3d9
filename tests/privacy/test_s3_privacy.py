"""Erasure and encryption at rest on an S3 lake (moto's server, a real S3 API over HTTP).

Every object the lake, the reports and MLflow write carries ``x-amz-server-side-encryption:
aws:kms`` with the configured key; after an erasure no Parquet object under the lake holds
the device (read back object by object).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from lake_traces import s3_parquet_traces, unique_pcm
from real_lake import isolated_settings, land_clips, small_lake_clips
from support import (
    MOTO_KEY_ID,
    MOTO_SECRET,
    moto_client,
    moto_server,
)

from lake_schemas import AUDIO_CHUNKS, SESSIONS
from orchestration.resources import resources_for
from sonolake import wiring
from streaming.spool.erasure import erase_everywhere

BUCKET = "sonolake-privacy"
KEY_ID, SECRET = MOTO_KEY_ID, MOTO_SECRET


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """moto's server on a free port, a bucket and a KMS key; yields (endpoint, key id)."""
    with moto_server(tmp_path, BUCKET) as endpoint:
        key = moto_client(endpoint, "kms").create_key()["KeyMetadata"]["KeyId"]
        monkeypatch.setenv("SONOLAKE_AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("SONOLAKE_AWS_SECRET_ACCESS_KEY", SECRET)
        yield endpoint, key


def _client(endpoint: str) -> Any:
    return moto_client(endpoint)


@pytest.mark.s3
@pytest.mark.integration
def test_s3_objects_are_encrypted_and_erasure_leaves_no_trace(
    moto: tuple[str, str], shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, kms_key = moto
    settings = isolated_settings(
        tmp_path,
        environment="s3",
        lake_uri=f"s3://{BUCKET}/lake",
        s3_endpoint_url=endpoint,
        aws_allow_http=True,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        s3_sse="aws:kms",
        s3_sse_kms_key_id=kms_key,
        mlflow_artifacts_uri=f"s3://{BUCKET}/mlflow",
    )
    clips = small_lake_clips(
        shared_data, train_speakers=2, heldout_speakers=0, per_speaker=2, silence_clips=0
    )
    lake = land_clips(settings, clips)
    devices = sorted(set(lake.read(SESSIONS).column("device_id").to_pylist()))
    device = devices[0]
    pcm = unique_pcm(lake.read(AUDIO_CHUNKS), device)
    client = _client(endpoint)
    assert s3_parquet_traces(client, BUCKET, "lake/", device, pcm)

    # reports through dagster-aws, artifacts through MLflow's S3 store
    with dg.build_resources({"lake": resources_for(settings)["lake"]}) as built:
        built.lake.save_file("monitoring/drift_html/probe.html", b"<p/>", "text/html")
    import mlflow

    monkeypatch.delenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", raising=False)
    for name, value in wiring.settings_mlflow_environment(settings).items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.create_experiment("sse", artifact_location=f"s3://{BUCKET}/mlflow")
    with mlflow.start_run(experiment_id=experiment):
        mlflow.log_text("weights", "model/probe.txt")

    result, _ = erase_everywhere(lake, settings.spool_path, device, requested_by="test")
    assert result.total_rows > 0 and result.files_vacuumed > 0 and not result.leftover_files
    assert s3_parquet_traces(client, BUCKET, "lake/", device, pcm) == {}
    kept = set(wiring.lake(settings).read(SESSIONS).column("device_id").to_pylist())
    assert kept == set(devices[1:])

    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for item in page.get("Contents", [])
    ]
    assert any(k.startswith("mlflow/") for k in keys) and any(k.endswith(".html") for k in keys)
    assert any("_delta_log" in k for k in keys) and any(k.endswith(".parquet") for k in keys)
    unencrypted = []
    for key in keys:
        head = client.head_object(Bucket=BUCKET, Key=key)
        if head.get("ServerSideEncryption") != "aws:kms" or kms_key not in head.get(
            "SSEKMSKeyId", ""
        ):
            unencrypted.append((key, head.get("ServerSideEncryption")))
    assert unencrypted == []
