"""Faults over real connections: a spool that refuses writes, and messages that break parsers."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gateway_support import next_message, open_ws, read_until_closed
from support import ServerProcess, free_port

from streaming.gateway.protocol import CLOSE_INTERNAL, CLOSE_NORMAL
from streaming.spool import KIND_CHUNK, read_segment, recover_open_segments, sealed_segments

pytestmark = pytest.mark.integration

FILE_LIMIT_BYTES = 128 * 1024
"""RLIMIT_FSIZE of the gateway process: a spool segment cannot grow past it (EFBIG)."""

_LIMITED_GATEWAY = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
    "sys.argv = ['sonolake', 'gateway', '--port', '{port}']; "
    "runpy.run_module('sonolake', run_name='__main__')"
)


def _gateway_with_small_files(tmp_path: Path) -> ServerProcess:
    port = free_port()
    code = _LIMITED_GATEWAY.format(limit=FILE_LIMIT_BYTES, port=port)
    env = {
        "SONOLAKE_STATE_DIR": str(tmp_path / "state"),
        "SONOLAKE_GATEWAY_SERVE_MODEL": "false",
        "SONOLAKE_AUTH_TOKENS": "",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return ServerProcess(
        [sys.executable, "-c", code], port, env=env, log_path=tmp_path / "gateway.log"
    )


def test_a_failed_spool_write_closes_1011_and_a_resend_is_stored(tmp_path: Path) -> None:
    server = _gateway_with_small_files(tmp_path).start()
    noise = np.random.default_rng(2).normal(0, 3000, 16000 * 8).astype(np.int16)
    frames = [noise[i : i + 1600].tobytes() for i in range(0, noise.size, 1600)]  # 80 × 3.2 kB
    base = f"ws://127.0.0.1:{server.port}/v1/listen?device_id=d"
    try:
        with open_ws(base) as ws:
            meta = next_message(ws)
            for frame in frames[:60]:  # ~190 kB within a second: past the file limit
                ws.send(frame)
            failed = read_until_closed(ws, timeout_s=20)
        assert failed.close_code == CLOSE_INTERNAL, (tmp_path / "gateway.log").read_text()
        assert failed.of("Error")[-1]["code"] == "internal"
        acked = failed.max_ack
        assert acked < 59, "not every chunk could have been stored"
        resume = f"{base}&session_id={meta['session_id']}&resume_token={meta['resume_token']}"
        with open_ws(f"{resume}&resume_from={acked + 1}") as ws:
            again = next_message(ws)
            assert again["resumed"] and again["durable_seq"] == acked
            for frame in frames[acked + 1 : acked + 11]:
                ws.send(frame)
            ws.send(json.dumps({"type": "CloseStream"}))
            closed = read_until_closed(ws, timeout_s=20)
        assert closed.close_code == CLOSE_NORMAL and closed.max_ack == acked + 10
        assert closed.of("Metadata")[-1]["totals"]["duplicate_chunks"] == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
            server.proc.wait(timeout=30)
    spool_dir = tmp_path / "state" / "spool"
    recover_open_segments(spool_dir)
    stored = [
        r
        for s in sealed_segments(spool_dir)
        for r in read_segment(s.path).to_pylist()
        if r["kind"] == KIND_CHUNK
    ]
    assert {r["seq"] for r in stored} >= set(range(acked + 11)), "acked and resent: all stored"
    assert all(r["pcm"] == frames[r["seq"]] for r in stored)


def test_malformed_json_is_bad_json_with_one_log_line(
    make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = make_gateway()
    huge = '{"type":"KeepAlive","n":' + "9" * 5000 + "}"  # past Python's int digit limit
    with (
        caplog.at_level(logging.INFO, logger="sonolake.gateway"),
        open_ws(gateway.url("device_id=d")) as ws,
    ):
        next_message(ws)
        errors = []
        for text in (huge, huge, "{", '{"type":"Label","label":"\\ud800"}', huge):
            ws.send(text)
            errors.append(next_message(ws))
        ws.send(np.zeros(1600, np.int16).tobytes())
        ws.send(json.dumps({"type": "CloseStream"}))
        transcript = read_until_closed(ws)
    assert transcript.close_code == CLOSE_NORMAL and transcript.max_ack == 0
    codes = [e["code"] for e in errors]
    assert codes == ["bad_json", "bad_json", "bad_json", "bad_label", "bad_json"]
    records = [r for r in caplog.records if r.name == "sonolake.gateway"]
    assert not [r for r in records if r.exc_info], "no traceback"
    assert len([r for r in records if "bad_" in r.getMessage()]) == 1
