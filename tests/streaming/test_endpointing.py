"""Endpointing: hysteresis, the silence gap, the length limit and forced ends."""

from __future__ import annotations

import pytest

from streaming.endpointing import Endpointer, EndpointEvent
from streaming.vad import WINDOW_SAMPLES


def _feed(endpointer: Endpointer, probs: list[float]) -> list[tuple[int, EndpointEvent]]:
    """Feed one probability per 32 ms window; return (window index, event) pairs."""
    events = []
    for index, prob in enumerate(probs):
        event = endpointer.push(prob, index * WINDOW_SAMPLES, (index + 1) * WINDOW_SAMPLES)
        if event is not None:
            events.append((index, event))
    return events


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        # a single loud window is not speech (min speech 64 ms = 2 windows)
        ([0.0, 0.9, 0.0, 0.0], []),
        # two loud windows start speech at the first of them
        ([0.0, 0.9, 0.9, 0.9], [(2, "start", 1 * WINDOW_SAMPLES)]),
        # between the thresholds is not enough to start
        ([0.4] * 10, []),
    ],
)
def test_speech_starts_after_the_minimum_duration(
    probs: list[float], expected: list[tuple[int, str, int]]
) -> None:
    events = _feed(Endpointer(300), probs)
    assert [(i, e.kind, e.sample) for i, e in events] == expected


def test_silence_of_endpointing_ms_ends_the_utterance() -> None:
    # 300 ms = 9.4 windows of 32 ms: the 10th silent window ends it
    probs = [0.9] * 5 + [0.1] * 12
    events = _feed(Endpointer(300), probs)
    assert [e.kind for _, e in events] == ["start", "end"]
    index, end = events[1]
    assert end.reason == "silence"
    assert end.sample == 5 * WINDOW_SAMPLES, "the end is where speech stopped, not detected"
    assert index == 5 + 9


def test_hysteresis_keeps_speech_through_middling_probabilities() -> None:
    # dips to 0.4 (above threshold_off 0.35) never count as silence
    probs = [0.9] * 3 + [0.4, 0.9] * 20
    events = _feed(Endpointer(100), probs)
    assert [e.kind for _, e in events] == ["start"]


def test_short_pauses_do_not_end_speech() -> None:
    probs = [0.9] * 3 + [0.1] * 5 + [0.9] * 3 + [0.1] * 20
    events = _feed(Endpointer(300), probs)
    assert [e.kind for _, e in events] == ["start", "end"]
    assert events[1][1].sample == 11 * WINDOW_SAMPLES


def test_endpointing_off_needs_a_forced_end() -> None:
    endpointer = Endpointer(None)
    events = _feed(endpointer, [0.9] * 3 + [0.0] * 100)
    assert [e.kind for _, e in events] == ["start"]
    forced = endpointer.force_end("finalize")
    assert forced is not None and forced.reason == "finalize"
    assert forced.sample == 3 * WINDOW_SAMPLES
    assert endpointer.force_end("finalize") is None, "nothing open any more"


def test_max_utterance_length_ends_long_speech() -> None:
    endpointer = Endpointer(300, max_utterance_ms=1000)
    events = _feed(endpointer, [0.9] * 80)
    kinds = [(e.kind, e.reason) for _, e in events]
    assert kinds[:2] == [("start", ""), ("end", "max_duration")]
    assert events[1][1].sample - events[0][1].sample >= 16_000


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError):
        Endpointer(300, threshold_on=0.3, threshold_off=0.5)
