"""Lake fixtures: a fresh lake on the local filesystem and on a real S3 API (moto's server).

The S3 server is one ``python -m moto.server`` child process per test session, on a free
loopback port, stopped by PID; each test gets its own prefix in one bucket. Tests that take
the ``lake`` fixture run twice, once per storage.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from lake_rows import events
from support import ServerProcess, free_port, python_module

from lake_schemas import Lake

BUCKET = "sonolake-test"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, str]:
        """What delta-rs needs for a plain-HTTP S3 endpoint with dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
        }

    def fresh_root(self) -> str:
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """A real S3 API: moto's server in a child process, with one bucket."""
    import boto3

    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    server = ServerProcess(
        python_module("moto.server", "-p", str(port), "-H", "127.0.0.1"),
        port,
        log_path=log_path,
    )
    with server:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        ).create_bucket(Bucket=BUCKET)
        yield S3Store(endpoint, BUCKET)


@pytest.fixture(
    params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.integration])]
)
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """An empty lake, local or on S3 (each test using it runs on both)."""
    if request.param == "local":
        return Lake(tmp_path / "lakehouse")
    store: S3Store = request.getfixturevalue("s3_store")
    return Lake(store.fresh_root(), store.storage_options)


@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lakehouse")


EventsFactory = Callable[..., pa.Table]


@pytest.fixture
def make_events() -> EventsFactory:
    return events
