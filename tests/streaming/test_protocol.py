"""The /v1/listen query and control messages: what is accepted and what each refusal says."""

from __future__ import annotations

import pytest

from streaming.gateway.protocol import (
    CLOSE_BAD_DATA,
    ProtocolError,
    parse_client_message,
    parse_listen_query,
    token_from_header,
    valid_id,
)


def test_defaults() -> None:
    params = parse_listen_query("/v1/listen?device_id=kitchen-01")
    assert (params.encoding, params.sample_rate, params.channels) == ("linear16", 16000, 1)
    assert params.interim_results is False and params.endpointing_ms == 300
    assert params.session_id is None and params.resume_from is None
    assert params.resume_token is None


def test_full_query() -> None:
    params = parse_listen_query(
        "/v1/listen?device_id=d.1&encoding=mulaw&sample_rate=8000&channels=1"
        "&interim_results=true&endpointing=500&session_id=s_1&resume_token=r-1&resume_from=12"
        "&token=k&foo=1"
    )
    assert params.encoding == "mulaw" and params.sample_rate == 8000
    assert params.interim_results and params.endpointing_ms == 500
    assert (params.session_id, params.resume_from, params.token) == ("s_1", 12, "k")
    assert params.resume_token == "r-1"
    assert params.ignored_params == ("foo",)
    assert parse_listen_query("/v1/listen?device_id=d&endpointing=false").endpointing_ms is None


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        ("utterance_end_ms=500", "bad_param", "utterance_end_ms=500"),
        ("device_id=d&encoding=speex", "bad_format", "encoding='speex' is not supported"),
        ("device_id=d&sample_rate=7999", "bad_param", "8000–48000"),
        ("device_id=d&sample_rate=96000", "bad_param", "8000–48000"),
        ("device_id=d&sample_rate=fast", "bad_param", "not an integer"),
        ("device_id=d&channels=2", "bad_param", "channels=2"),
        ("device_id=d&interim_results=maybe", "bad_param", "not a boolean"),
        ("device_id=d&endpointing=5", "bad_param", "endpointing=5"),
        ("device_id=d&resume_from=3", "bad_param", "needs the session_id"),
        ("device_id=d&session_id=s&resume_token=r&resume_from=-1", "bad_param", "resume_from"),
        ("device_id=d&session_id=mine", "bad_param", "session_id and resume_token go together"),
        ("device_id=d&resume_token=r", "bad_param", "session_id and resume_token go together"),
        ("device_id=d&session_id=s&resume_token=" + "r" * 129, "bad_param", "1–128"),
        ("device_id=d&device_id=e", "bad_param", "given twice"),
        ("device_id=../../etc/passwd", "bad_id", "device_id must be"),
        ("device_id=..", "bad_id", "device_id must be"),
        ("device_id=a%00b", "bad_id", "device_id must be"),
        ("device_id=" + "x" * 65, "bad_id", "device_id must be"),
        ("device_id=d&session_id=a/b", "bad_id", "session_id must be"),
        ("device_id=d&session_id=%20", "bad_id", "session_id must be"),
    ],
)
def test_bad_queries_say_what_to_change(query: str, code: str, says: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_listen_query(f"/v1/listen?{query}")
    assert caught.value.code == code
    assert says in caught.value.message
    assert caught.value.close_code == CLOSE_BAD_DATA


@pytest.mark.parametrize("value", ["a", "A9", "spk-george", "x.y_z-1", "0" * 64])
def test_valid_ids(value: str) -> None:
    assert valid_id(value)


@pytest.mark.parametrize("value", ["", ".", "-a", "a b", "a/b", "é", "0" * 65, "a\\b"])
def test_invalid_ids(value: str) -> None:
    assert not valid_id(value)


def test_client_messages() -> None:
    assert parse_client_message('{"type":"KeepAlive"}').type == "KeepAlive"
    assert parse_client_message('{"type":"Label","label":"yes"}').label == "yes"
    assert parse_client_message('{"type":"Label","label":null}').label is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"kind":"KeepAlive"}', "bad_message"),
        ('{"type":"Shutdown"}', "unknown_type"),
        ('{"type":"Label","label":""}', "bad_label"),
        ('{"type":"Label","label":7}', "bad_label"),
        ('{"type":"Label","label":"' + "x" * 65 + '"}', "bad_label"),
        ("[" * 100_000, "bad_json"),
        ('{"type":"KeepAlive","n":' + "9" * 5000 + "}", "bad_json"),
        ('{"type":"Label","label":"\\ud800"}', "bad_label"),
    ],
)
def test_bad_client_messages_keep_the_session(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text)
    assert caught.value.code == code
    assert caught.value.close_code is None


def test_token_header() -> None:
    assert token_from_header("Token abc") == "abc"
    assert token_from_header("Bearer abc") == "abc"
    assert token_from_header("Basic abc") is None
    assert token_from_header("Token ") is None
    assert token_from_header(None) is None
