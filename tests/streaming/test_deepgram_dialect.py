"""What a Deepgram client's query means here, and the Deepgram fields of each message."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streaming.gateway.protocol import (
    DEFAULT_DEVICE_ID,
    ProtocolError,
    connection_warnings,
    credential_device_id,
    parse_listen_query,
)
from streaming.gateway.results import (
    model_uuid,
    results_message,
    speech_started_message,
    utterance_end_message,
)


@dataclass
class _Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]] = field(default_factory=list)
    model_version: str | None = "3"


@pytest.mark.parametrize(
    ("query", "credential", "device", "source"),
    [
        ("device_id=d-1&tag=t1", "k", "d-1", "query"),
        ("tag=room-2&tag=second", "k", "room-2", "tag"),
        ("model=nova-3", "secret", credential_device_id("secret"), "credential"),
        ("model=nova-3", None, DEFAULT_DEVICE_ID, "default"),
    ],
)
def test_device_comes_from_device_id_then_tag_then_credential(
    query: str, credential: str | None, device: str, source: str
) -> None:
    known = credential_device_id(credential) if credential else None
    params = parse_listen_query(f"/v1/listen?{query}", known)
    assert (params.device_id, params.device_source) == (device, source)


def test_credential_device_is_stable_and_hides_the_key() -> None:
    device = credential_device_id("my-secret-key")
    assert device == credential_device_id("my-secret-key") != credential_device_id("other")
    assert device.startswith("key-") and "secret" not in device and len(device) == 20


def test_a_tag_that_is_no_valid_id_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_listen_query("/v1/listen?tag=a/b")
    assert caught.value.code == "bad_id" and "tag must be" in caught.value.message


def test_deepgram_query_is_accepted_with_warnings() -> None:
    params = parse_listen_query(
        "/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1"
        "&interim_results=True&endpointing=10&vad_events=false&utterance_end_ms=1000"
        "&punctuate=true&smart_format=true&keywords=a&keywords=b&shiny=1"
    )
    assert params.interim_results and params.endpointing_ms == 10
    assert params.vad_events is False and params.utterance_end_ms == 1000
    assert params.deepgram_params == ("keywords", "punctuate", "smart_format")
    assert params.ignored_params == ("shiny",)
    codes = [w["code"] for w in connection_warnings(params, "4")]
    assert codes == ["ignored_params", "unsupported_params", "model_fallback"]
    assert "champion (version 4)" in connection_warnings(params, "4")[-1]["message"]


@pytest.mark.parametrize(
    ("model", "served", "codes"),
    [
        ("champion", "4", []),
        ("4", "4", []),
        ("3", "4", ["model_unavailable"]),
        ("challenger", "4", ["model_unavailable"]),
        ("nova-2-general", None, ["model_fallback"]),
    ],
)
def test_model_selection_warns_when_it_cannot_be_honoured(
    model: str, served: str | None, codes: list[str]
) -> None:
    params = parse_listen_query(f"/v1/listen?device_id=d&model={model}")
    assert [w["code"] for w in connection_warnings(params, served)] == codes


@pytest.mark.parametrize(("encoding", "compressed"), [("opus", True), ("flac", True)])
def test_compressed_encodings_are_processed_as_decoded_pcm16(
    encoding: str, compressed: bool
) -> None:
    params = parse_listen_query(f"/v1/listen?device_id=d&encoding={encoding}&sample_rate=48000")
    assert params.compressed is compressed and params.encoding_given
    assert (params.pcm_encoding, params.bytes_per_sample) == ("linear16", 2)
    assert parse_listen_query("/v1/listen?device_id=d").encoding_given is False


def _result(prediction: _Prediction | None) -> dict:
    return results_message(
        utterance=1,
        is_final=True,
        speech_final=True,
        from_finalize=False,
        start_sample=16_000,
        end_sample=24_000,
        last_seq=14,
        prediction=prediction,
        top_k=2,
        request_id="req-1",
    )


def test_results_carry_the_label_as_a_one_word_transcript() -> None:
    message = _result(_Prediction("yes", 0.9, [("yes", 0.9), ("_unknown_", 0.05)]))
    assert message["channel_index"] == [0, 1]
    best, second = message["channel"]["alternatives"]
    assert (best["transcript"], best["confidence"]) == ("yes", 0.9)
    assert best["words"] == [
        {"word": "yes", "punctuated_word": "yes", "start": 1.0, "end": 1.5, "confidence": 0.9}
    ]
    assert (second["transcript"], second["words"], second["label"]) == ("", [], "_unknown_")
    assert message["metadata"] == {
        "request_id": "req-1",
        "model_info": {"name": "sonolake-keywords", "version": "3", "arch": "onnx"},
        "model_uuid": model_uuid("3"),
    }
    assert message["label"] == "yes" and message["alternatives"][0] == {
        "label": "yes",
        "score": 0.9,
    }


@pytest.mark.parametrize("label", ["_silence_", "_unknown_"])
def test_non_word_labels_are_an_empty_transcript(label: str) -> None:
    message = _result(_Prediction(label, 0.7, [(label, 0.7)]))
    (best,) = message["channel"]["alternatives"]
    assert (best["transcript"], best["words"], message["label"]) == ("", [], label)


def test_without_a_model_a_segment_is_an_empty_transcript() -> None:
    message = _result(None)
    assert message["channel"]["alternatives"] == [
        {"transcript": "", "confidence": 0.0, "words": [], "label": None}
    ]
    assert message["metadata"]["model_info"]["version"] == "none"
    assert model_uuid(None) != model_uuid("3") and model_uuid("3") == model_uuid("3")


def test_vad_events_carry_deepgram_channels() -> None:
    assert speech_started_message(1, 8_000, 5)["channel"] == [0]
    assert utterance_end_message(1, 8_000, "silence", 5)["channel"] == [0, 1]
