"""The official Deepgram Python SDK, unchanged, against a live gateway.

The SDK is pointed at the gateway through its own environment setting, streams real keyword
recordings with its socket client, and every check is on the SDK's typed objects — the
models a Deepgram integration already consumes (``ListenV1Results``, ``ListenV1Metadata``, …).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from gateway_support import chunks, speech_stream
from websockets.exceptions import ConnectionClosedError

from benchmarks.gateway import LABELS, write_linear_bundle
from models.serving import ServingEngine
from streaming.gateway.protocol import CLOSE_POLICY, credential_device_id
from streaming.gateway.results import NON_WORD_LABELS
from streaming.spool import KIND_CHUNK

pytestmark = pytest.mark.integration


def _client(port: int, api_key: str = "test-token") -> DeepgramClient:
    here = f"127.0.0.1:{port}"
    environment = DeepgramClientEnvironment(
        base=f"http://{here}", production=f"ws://{here}", agent=f"ws://{here}",
        agent_rest=f"http://{here}",
    )  # fmt: skip
    return DeepgramClient(api_key=api_key, environment=environment)


def _stream_words(socket: Any, audio: Any, *, finalize_after: int) -> list[Any]:
    """Send 100 ms chunks (Finalize after ``finalize_after`` of them), CloseStream, read all."""
    frames = chunks(audio)
    for index, frame in enumerate(frames):
        socket.send_media(frame)
        if index + 1 == finalize_after:
            socket.send_finalize()
        time.sleep(0.005)
    socket.send_close_stream()
    return [message for message in socket if message is not None]  # None: Ack, Warning


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    serving = ServingEngine.from_bundle(
        write_linear_bundle(tmp_path / "model", seed=3),
        providers=["CPUExecutionProvider"],
        model_version="5",
        max_wait_us=500,
    )
    yield serving
    serving.close()


def test_deepgram_sdk_streams_finalizes_and_closes(
    make_gateway: Any, engine: Any, shared_data: Path
) -> None:
    gateway = make_gateway(engine=engine)
    audio = speech_stream(shared_data, words=2, gap_s=1.0)
    first_word_end = int((1.0 + 1.0 + 1.0) * 10)  # gap, word, gap: in 100 ms chunks
    with _client(gateway.port).listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate=16000,
        channels=1,
        interim_results="true",
        vad_events="true",
        utterance_end_ms=1000,
        endpointing="false",
        smart_format="true",
        tag="kitchen-7",
    ) as socket:
        messages = _stream_words(socket, audio, finalize_after=first_word_end)

    opening, closing = messages[0], messages[-1]
    assert isinstance(opening, ListenV1Metadata) and isinstance(closing, ListenV1Metadata)
    assert opening.request_id and opening.channels == 1 and opening.created
    assert closing.request_id == opening.request_id
    assert closing.duration == pytest.approx(audio.size / 16000, abs=0.01)
    assert len(closing.sha256) == 64

    results = [m for m in messages if isinstance(m, ListenV1Results)]
    finals = [r for r in results if r.is_final]
    assert len(finals) == 2, "one final per word: the first by Finalize, the second by close"
    assert [r.from_finalize for r in finals] == [True, False]
    for result in results:
        assert result.channel_index == [0, 1]
        assert result.metadata.request_id == opening.request_id
        assert result.metadata.model_info.version == "5" and result.metadata.model_uuid
        best = result.channel.alternatives[0]
        label = result.model_extra["label"] if result.model_extra else None
        assert label in LABELS
        assert best.transcript == ("" if label in NON_WORD_LABELS else label)
        assert 0.0 < best.confidence <= 1.0
        if best.transcript:
            (word,) = best.words
            assert word.word == best.transcript and word.confidence == best.confidence
            assert word.start == result.start
            assert word.end == pytest.approx(result.start + result.duration, abs=0.002)
        else:
            assert best.words == []
    started = [m for m in messages if isinstance(m, ListenV1SpeechStarted)]
    ends = [m for m in messages if isinstance(m, ListenV1UtteranceEnd)]
    assert len(started) == 2 and {tuple(s.channel) for s in started} == {(0,)}
    assert [e.last_word_end for e in ends] == [
        pytest.approx(f.start + f.duration, abs=0.002) for f in finals
    ]
    assert started[0].timestamp <= finals[0].start + 0.001

    stored = [r for r in gateway.stored().to_pylist() if r["kind"] == KIND_CHUNK]
    assert {r["device_id"] for r in stored} == {"kitchen-7"}, "Deepgram's tag names the device"
    assert sum(len(r["pcm"]) for r in stored) == audio.size * 2


def test_deepgram_sdk_without_tag_is_the_credential_device(
    make_gateway: Any, shared_data: Path
) -> None:
    gateway = make_gateway()
    audio = speech_stream(shared_data, words=1)
    with _client(gateway.port).listen.v1.connect(model="nova-3") as socket:
        messages = _stream_words(socket, audio, finalize_after=-1)
    assert isinstance(messages[0], ListenV1Metadata)
    assert messages[0].model_extra and messages[0].model_extra["device_id"] == (
        credential_device_id("test-token")
    )
    results = [m for m in messages if isinstance(m, ListenV1Results)]
    assert results, "segments still parse with no model: an empty transcript"
    assert all(r.channel.alternatives[0].transcript == "" for r in results)


def test_deepgram_sdk_reads_a_refusal_as_its_error_type(make_gateway: Any) -> None:
    gateway = make_gateway()
    messages = []
    connection = _client(gateway.port, api_key="not-a-key").listen.v1.connect(model="nova-3")
    with connection as socket, pytest.raises(ConnectionClosedError) as closed:
        messages.extend(socket)
    (error,) = messages
    assert isinstance(error, ListenV1Error)
    assert error.variant == "unauthorized" and "token" in error.description
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_POLICY
