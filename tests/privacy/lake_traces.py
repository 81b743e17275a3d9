"""Look for a device in the files themselves: every Parquet file under a lake, every spool segment.

The erasure's own check reads its key columns; these helpers read whole files, every column, so a
test does not trust the code it tests: a string cell equal to the device id, or a binary cell
equal to one of the device's audio chunks, is a trace.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _traces(table: pa.Table, device_id: str, pcm: set[bytes]) -> list[str]:
    found = []
    for name in table.column_names:
        column = table.column(name)
        kind = column.type
        if (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)
        ):
            if pc.any(pc.equal(pc.cast(column, pa.string()), device_id)).as_py():
                found.append(name)
        elif (
            pcm
            and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind))
            and any(v in pcm for v in column.to_pylist() if v is not None)
        ):
            found.append(name)
    return found


def local_parquet_traces(root: Path, device_id: str, pcm: set[bytes]) -> dict[str, list[str]]:
    """Parquet file → the columns that still hold the device (only files with a trace)."""
    found = {}
    for path in sorted(Path(root).rglob("*.parquet")):
        columns = _traces(pq.read_table(path), device_id, pcm)
        if columns:
            found[str(path)] = columns
    return found


def s3_parquet_traces(
    client: object, bucket: str, prefix: str, device_id: str, pcm: set[bytes]
) -> dict[str, list[str]]:
    """The same over every Parquet object under ``s3://bucket/prefix`` (a boto3 client)."""
    found = {}
    paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith(".parquet"):
                continue
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
            columns = _traces(pq.read_table(io.BytesIO(body)), device_id, pcm)
            if columns:
                found[key] = columns
    return found


def spool_traces(spool_dir: Path, device_id: str) -> list[str]:
    """Spool segments (sealed, landed) that still hold a record of the device."""
    found = []
    for path in sorted(Path(spool_dir).rglob("*.arrow")):
        table = pa.ipc.open_stream(path.read_bytes()).read_all()
        if pc.any(pc.equal(table.column("device_id"), device_id)).as_py():
            found.append(str(path))
    return found


def unique_pcm(chunks: pa.Table, device_id: str) -> set[bytes]:
    """The device's audio chunks that no other device sent (silence is the same everywhere)."""
    mine, others = set(), set()
    for device, pcm in zip(
        chunks.column("device_id").to_pylist(), chunks.column("pcm").to_pylist(), strict=True
    ):
        (mine if device == device_id else others).add(pcm)
    return mine - others
