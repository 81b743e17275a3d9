"""The AssemblyAI Python SDK's v3 streaming client, unchanged, against a live gateway.

``StreamingClient`` is pointed at the gateway with ``api_host="ws://HOST:PORT"``; it streams
real keyword recordings, forces an endpoint, terminates, and every check is on the SDK's
typed events (``BeginEvent``, ``TurnEvent``, ``TerminationEvent``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from assemblyai.streaming.v3 import (
    BeginEvent,
    Encoding,
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
    TerminationEvent,
    TurnEvent,
)
from gateway_support import chunks, speech_stream

from streaming.gateway.protocol import credential_device_id
from streaming.spool import KIND_CHUNK

pytestmark = pytest.mark.integration


def test_assemblyai_sdk_streams_turns_and_terminates(make_gateway: Any, shared_data: Path) -> None:
    gateway = make_gateway()
    audio = speech_stream(shared_data, words=2, gap_s=1.0)
    events: list[Any] = []
    terminated = threading.Event()
    client = StreamingClient(
        StreamingClientOptions(api_key="test-token", api_host=f"ws://127.0.0.1:{gateway.port}")
    )
    for kind in (StreamingEvents.Begin, StreamingEvents.Turn, StreamingEvents.Termination):
        client.on(kind, lambda _client, event: events.append(event))
    client.on(StreamingEvents.Termination, lambda _client, _event: terminated.set())
    client.on(StreamingEvents.Error, lambda _client, error: events.append(error))
    client.connect(StreamingParameters(sample_rate=16000, encoding=Encoding.pcm_s16le))
    for frame in chunks(audio):
        client.stream(frame)
        time.sleep(0.01)
    client.force_endpoint()
    client.disconnect(terminate=True)
    assert terminated.wait(20), events

    begin, termination = events[0], events[-1]
    assert isinstance(begin, BeginEvent) and begin.id
    assert isinstance(termination, TerminationEvent)
    assert termination.audio_duration_seconds == int(audio.size / 16000)
    turns = [e for e in events if isinstance(e, TurnEvent)]
    finals = [t for t in turns if t.end_of_turn]
    assert len(finals) == 2 and [t.turn_order for t in finals] == [0, 1]
    assert all(t.transcript == "" and t.words == [] for t in turns), "no model: no words"
    stored = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK]
    assert {r["session_id"] for r in stored} == {begin.id}
    assert {r["device_id"] for r in stored} == {credential_device_id("test-token")}
    assert sum(len(r["pcm"]) for r in stored) == audio.size * 2
