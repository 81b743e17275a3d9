"""The spool's disk refuses writes: the session ends with 1011 and no Ack covers a lost chunk.

The real ``sonolake gateway`` runs with ``RLIMIT_FSIZE`` (set in the child before it starts):
once a spool segment would grow past the limit, every write to it fails with ``EFBIG``, as on
a full disk. A device streams as fast as it can; the gateway must end the session with 1011
and must never have acknowledged a chunk it did not store. Afterwards the spool is read back
(its open segment recovered, as the next writer would) and compared with the Acks.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
from pathlib import Path

import pytest
from processes import GatewayProcess, child_env
from resuming_client import chunk_bytes
from support import free_port
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from streaming.gateway.protocol import CLOSE_INTERNAL, CLOSE_NORMAL
from streaming.spool import KIND_CHUNK, read_segment, recover_open_segments, sealed_segments

pytestmark = pytest.mark.integration

FILE_LIMIT_BYTES = 96 * 1024
"""Largest file the gateway may write: ~30 chunks of 3,200 bytes per spool segment."""
CHUNKS = 200
"""Sent as fast as possible: one group commit of them outgrows the limit."""
RESEND_CHUNKS = 20
"""Sent at real time after the failure: ~32 KB per 1-s segment, which the limit allows."""


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, FILE_LIMIT_BYTES))


def _gateway(workdir: Path, cache: Path) -> GatewayProcess:
    env = child_env(
        cache,
        state_dir=str(workdir / "state"),
        gateway_serve_model="false",
        auth_tokens="disk-full-token",
    )
    # Under the limit a compiled module could be written cut short; read the cache, never
    # write it, or the truncated file breaks every later process that shares it.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return GatewayProcess(workdir, free_port(), env, preexec_fn=_limit_file_size)


def _open(url: str, query: str = "device_id=disk-full") -> tuple[ClientConnection, dict]:
    ws = connect(
        f"{url}?{query}",
        additional_headers={"Authorization": "Token disk-full-token"},
        open_timeout=10,
        compression=None,
    )
    return ws, json.loads(ws.recv(timeout=10))


def _stream_until_closed(
    ws: ClientConnection, first_seq: int, chunks: range, *, pace_s: float, close: bool
) -> dict:
    """Send ``chunks`` (every ``pace_s`` s, then CloseStream if ``close``); read until closed."""
    acked, errors, sent = first_seq - 1, [], {}

    def take(message: dict) -> None:
        nonlocal acked
        acked = max(acked, message["seq"]) if message["type"] == "Ack" else acked
        errors.extend([message] if message["type"] == "Error" else [])

    try:
        for seq, chunk in enumerate(chunks, start=first_seq):
            ws.send(chunk_bytes(0, chunk))
            sent[seq] = chunk
            with contextlib.suppress(TimeoutError):
                while True:  # what has arrived, waiting at most the pace
                    take(json.loads(ws.recv(timeout=pace_s)))
        if close:
            ws.send(json.dumps({"type": "CloseStream"}))
        while True:
            take(json.loads(ws.recv(timeout=20)))
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        return {"acked": acked, "errors": errors, "sent": sent, "close_code": code}


def _stored_chunks(spool_dir: Path, session_id: str) -> dict[int, bytes]:
    recover_open_segments(spool_dir)  # what the next writer does on start
    stored: dict[int, bytes] = {}
    for segment in sealed_segments(spool_dir):
        for row in read_segment(segment.path).to_pylist():
            if row["kind"] == KIND_CHUNK and row["session_id"] == session_id:
                stored.setdefault(row["seq"], row["pcm"])
    return stored


def _assert_no_false_ack(outcome: dict, stored: dict[int, bytes], first_seq: int) -> None:
    for seq in range(first_seq, outcome["acked"] + 1):
        chunk = outcome["sent"][seq]
        assert stored.get(seq) == chunk_bytes(0, chunk), f"seq {seq} was acked, not stored"


def test_a_refusing_disk_ends_the_session_with_1011_and_no_false_ack(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    gateway = _gateway(tmp_path, bytecode_cache).start()
    try:
        ws, metadata = _open(gateway.url)
        assert metadata["type"] == "Metadata"
        outcome = _stream_until_closed(ws, 0, range(CHUNKS), pace_s=0, close=False)
    finally:
        gateway.stop()
    stored = _stored_chunks(tmp_path / "state" / "spool", metadata["session_id"])
    print(
        f"spool refusing writes: {len(outcome['sent'])} chunks sent, {len(stored)} stored, "
        f"acked up to seq {outcome['acked']}, close code {outcome['close_code']}"
    )
    assert outcome["close_code"] == CLOSE_INTERNAL, outcome["errors"]
    assert len(stored) < len(outcome["sent"]), "the limit made the spool refuse writes"
    _assert_no_false_ack(outcome, stored, 0)


def test_after_a_spool_failure_the_device_is_never_left_believing_unstored_audio_is_safe(
    tmp_path: Path, bytecode_cache: Path
) -> None:
    """Reconnecting after the 1011 (a resume, or a new session if refused) and resending at
    real time, when the spool can store again: every chunk is acknowledged and stored, or the
    session ends with an error — a normal close with unacknowledged chunks would leave the
    device believing its audio is safe (today: the resends count as duplicates)."""
    gateway = _gateway(tmp_path, bytecode_cache).start()
    try:
        ws, metadata = _open(gateway.url)
        first = _stream_until_closed(ws, 0, range(CHUNKS), pace_s=0, close=False)
        assert first["close_code"] == CLOSE_INTERNAL
        time.sleep(1.5)  # the spool seals the refused segment and starts a new one
        query = f"device_id=disk-full&session_id={metadata['session_id']}"
        query += f"&resume_from={first['acked'] + 1}"
        if metadata.get("resume_token"):
            query += f"&resume_token={metadata['resume_token']}"
        ws, again = _open(gateway.url, query)
        session_id, first_seq = metadata["session_id"], first["acked"] + 1
        if again["type"] != "Metadata":  # the resume was refused: a new session
            ws, again = _open(gateway.url)
            session_id, first_seq = again["session_id"], 0
        resend_from = first["sent"].get(first["acked"] + 1, len(first["sent"]))
        # slowly now: each segment stays far below the limit, so these writes can succeed
        resend = range(resend_from, resend_from + RESEND_CHUNKS)
        second = _stream_until_closed(ws, first_seq, resend, pace_s=0.1, close=True)
    finally:
        gateway.stop()
    stored = _stored_chunks(tmp_path / "state" / "spool", session_id)
    _assert_no_false_ack(second, stored, first_seq)
    unacked = [seq for seq in second["sent"] if seq > second["acked"]]
    assert second["close_code"] == CLOSE_INTERNAL or not unacked, (
        f"closed {second['close_code']} with {len(unacked)} chunks neither acked nor refused"
    )
    assert second["close_code"] == CLOSE_NORMAL, "a storable resend is stored"
