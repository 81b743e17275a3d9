"""Per-session bookkeeping: sequence numbers, durable watermark, drop-oldest, utterance audio."""

from __future__ import annotations

import numpy as np

from features.pcm import encode_mulaw
from streaming.gateway.protocol import ListenParams
from streaming.gateway.session import Session
from streaming.vad import WINDOW_SAMPLES


def _session(max_pending_ms: int = 500, **params: object) -> Session:
    return Session(
        "s1",
        ListenParams(device_id="d", **params),  # type: ignore[arg-type]
        credential="anonymous",
        resume_digest="0" * 64,
        max_pending_ms=max_pending_ms,
        max_utterance_ms=10_000,
    )


def test_sequence_numbers_and_duplicates_after_resume() -> None:
    session = _session()
    assert [session.assign_seq() for _ in range(3)] == [(0, False), (1, False), (2, False)]
    session.resume(1)  # the client saw no Ack past 0 and resends from 1
    assert [session.assign_seq() for _ in range(3)] == [(1, True), (2, True), (3, False)]
    assert session.totals.duplicate_chunks == 2


def test_a_failed_write_forgets_every_unstored_seq() -> None:
    session = _session()
    for _ in range(5):
        session.assign_seq()
    session.mark_durable(0)
    session.mark_durable(1)
    session.forget_unstored()  # writes of 2..4 failed
    assert (session.durable_seq, session.next_seq) == (1, 2)
    assert session.assign_seq() == (2, False), "the resend of a failed seq is stored"


def test_a_parked_session_keeps_only_unscored_samples() -> None:
    session = _session()
    full = session.buffer_bytes
    session.feed(session.assign_seq()[0], np.ones(WINDOW_SAMPLES + 100, np.int16).tobytes())
    session.take_windows()
    session.free_buffers()
    assert session.buffer_bytes == 100 * 4 < full / 100
    session.ensure_buffers()
    assert session.buffer_bytes == full and session.pending_samples == 100


def test_durable_watermark_waits_for_every_earlier_write() -> None:
    session = _session()
    for _ in range(4):
        session.assign_seq()
    assert not session.mark_durable(2), "0 and 1 are still in flight"
    assert session.mark_durable(0) and session.durable_seq == 0
    assert session.mark_durable(1) and session.durable_seq == 2
    assert session.mark_durable(3) and session.durable_seq == 3


def test_falling_behind_drops_the_oldest_whole_chunks() -> None:
    session = _session()
    chunk = np.full(1600, 1000, dtype=np.int16).tobytes()  # 100 ms
    dropped = [session.feed(session.assign_seq()[0], chunk) for _ in range(7)]
    # 500 ms allowed: the 6th and 7th chunks push the oldest out
    assert dropped == [0, 0, 0, 0, 0, 1, 1]
    assert session.totals.dropped_chunks == 2
    assert session.totals.dropped_ms == 200.0
    assert session.windows_ready == 5 * 1600 // WINDOW_SAMPLES
    assert session.processed == 3200, "the stream clock still counts the dropped audio"
    (_window, end, seq), *_ = session.take_windows()
    assert (end, seq) == (3200 + 512, 2), "the first window left is chunk 2's audio"


def test_mulaw_8k_is_decoded_and_resampled_to_16k() -> None:
    session = _session(max_pending_ms=2000, encoding="mulaw", sample_rate=8000)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)
    for start in range(0, 8000, 800):
        session.feed(session.assign_seq()[0], encode_mulaw(tone[start : start + 800]))
    session.flush_resampler()
    assert session.totals.audio_ms == 1000.0
    total = session.windows_ready * WINDOW_SAMPLES
    assert abs(total - 16_000) <= WINDOW_SAMPLES


def test_utterance_audio_includes_pre_roll_and_ends_at_the_endpoint() -> None:
    session = _session(max_pending_ms=2000, endpointing_ms=100)
    rng = np.random.default_rng(0)
    loud = (rng.normal(0, 3000, 1600)).astype(np.int16).tobytes()
    quiet = np.zeros(1600, np.int16).tobytes()
    for pcm in [quiet] * 5 + [loud] * 5 + [quiet] * 5:
        session.feed(session.assign_seq()[0], pcm)
    closed = None
    for window, end, seq in session.take_windows():
        prob = 0.9 if np.abs(window).max() > 0.01 else 0.0
        _, done = session.on_window(window, prob, end, seq)
        closed = done or closed
    assert closed is not None and closed.reason == "silence"
    assert closed.start_sample == 8000 // WINDOW_SAMPLES * WINDOW_SAMPLES
    # pre-roll (200 ms) + speech + tail (100 ms)
    assert (
        closed.audio.size >= closed.end_sample - closed.start_sample + 3200 + 1600 - WINDOW_SAMPLES
    )
