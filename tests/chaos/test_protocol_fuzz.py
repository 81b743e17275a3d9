"""Property-based fuzzing of the wire protocol's parsers (hypothesis).

Whatever a client sends, the parsers either return a valid value or raise
:class:`ProtocolError` — never another exception, which the gateway would turn into a 1011
and a traceback per message. The short runs go with ``make test``; the ``chaos`` variants try
many more inputs.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.gateway import protocol as proto

SHORT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
messages = st.one_of(
    st.text(max_size=300),
    json_values.map(json.dumps),
    st.builds(
        lambda kind, extra: json.dumps({"type": kind, **extra}),
        st.sampled_from([*proto.CLIENT_MESSAGE_TYPES, "", "label", "Close"]),
        st.dictionaries(st.sampled_from(["label", "seq", "x"]), json_values, max_size=3),
    ),
)
query_keys = st.sampled_from(
    ["device_id", "encoding", "sample_rate", "channels", "interim_results", "endpointing",
     "session_id", "resume_from", "resume_token", "token", "x", ""]
)  # fmt: skip
queries = st.lists(st.tuples(query_keys, st.text(max_size=40)), max_size=8).map(
    lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
)


def check_message(text: str) -> None:
    try:
        message = proto.parse_client_message(text)
    except proto.ProtocolError as error:
        assert error.close_code is None, "a bad control message never ends the session"
        return
    assert message.type in proto.CLIENT_MESSAGE_TYPES
    if message.label is not None:
        assert 0 < len(message.label) <= proto.MAX_LABEL_CHARS and message.label.isprintable()


def check_query(query: str) -> None:
    try:
        params = proto.parse_listen_query(f"{proto.LISTEN_PATH}?{query}")
    except proto.ProtocolError as error:
        assert error.code and error.message
        return
    assert proto.valid_id(params.device_id), "ids that reach file names are always clean"
    assert params.session_id is None or proto.valid_id(params.session_id)
    assert params.encoding in proto.ENCODINGS


@SHORT
@given(messages)
def test_any_text_frame_parses_or_is_refused_without_ending_the_session(text: str) -> None:
    check_message(text)


@SHORT
@given(queries)
def test_any_listen_query_parses_or_is_refused_with_a_reason(query: str) -> None:
    check_query(query)


@pytest.mark.parametrize("digits", [4301, 5000, 20_000])
def test_an_integer_beyond_pythons_digit_limit_is_bad_json(digits: int) -> None:
    text = '{"type":"KeepAlive","n":' + "7" * digits + "}"
    with pytest.raises(proto.ProtocolError) as refused:
        proto.parse_client_message(text)
    assert refused.value.code == "bad_json"


@pytest.mark.chaos
@LONG
@given(messages)
def test_chaos_many_more_text_frames(text: str) -> None:
    check_message(text)


@pytest.mark.chaos
@LONG
@given(queries)
def test_chaos_many_more_listen_queries(query: str) -> None:
    check_query(query)
