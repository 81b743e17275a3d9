"""Decoding, mu-law and resampling shared by the gateway, the sidecar and training."""

from __future__ import annotations

import numpy as np
import pytest

from features.corpus import read_manifest, split_by_speaker, write_wav
from features.pcm import (
    MULAW_TO_PCM16,
    StreamResampler,
    check_format,
    decode,
    encode_mulaw,
    resample,
    to_float,
)


def test_mulaw_round_trip_is_within_one_step() -> None:
    samples = np.arange(-32124, 32125, 7, dtype=np.int16)  # mu-law full scale is ±32124
    decoded = decode(encode_mulaw(samples), "mulaw").astype(np.int32)
    # G.711 keeps ~13 bits of magnitude: the error grows with the segment's step (16-bit units),
    # and a value just past a segment edge may decode to the coarser neighbour (hence 10 %).
    step = np.maximum(8, 2 ** (np.floor(np.log2(np.abs(samples.astype(np.int32)) + 132)) - 4))
    assert np.all(np.abs(decoded - samples) <= 1.1 * step)


def test_mulaw_table_is_symmetric_and_covers_full_scale() -> None:
    assert MULAW_TO_PCM16[0x00] == -32124 and MULAW_TO_PCM16[0x80] == 32124
    assert MULAW_TO_PCM16[0xFF] == 0 and MULAW_TO_PCM16[0x7F] == 0


def test_linear16_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        decode(b"\x00\x01\x02", "linear16")


@pytest.mark.parametrize(
    ("encoding", "rate", "message"),
    [
        ("opus", 16000, "encoding='opus'"),
        ("linear16", 7, "sample_rate=7"),
        ("mulaw", 96000, "8000"),
    ],
)
def test_check_format_says_what_to_change(encoding: str, rate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_format(encoding, rate)


@pytest.mark.parametrize("from_hz", [8000, 22050, 44100, 48000])
def test_stream_resampler_matches_whole_clip(from_hz: int) -> None:
    t = np.arange(from_hz) / from_hz
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stream = StreamResampler(from_hz)
    chunk = from_hz // 10 + 3  # chunks that do not divide the clip evenly
    pieces = [stream.process(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    streamed = np.concatenate([*pieces, stream.flush()])
    whole = resample(audio, from_hz)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-4
    assert len(whole) == 16000


def test_speaker_split_is_disjoint_and_stable(shared_data) -> None:
    clips = read_manifest(shared_data / "speech_commands" / "manifest.csv")
    train, test = split_by_speaker(clips, test_fraction=0.2, seed=0)
    assert len(train) + len(test) == len(clips) == 3169
    assert not {c.speaker for c in train} & {c.speaker for c in test}
    assert 0.1 < len(test) / len(clips) < 0.3
    again_train, _ = split_by_speaker(list(reversed(clips)), test_fraction=0.2, seed=0)
    assert {c.path for c in again_train} == {c.path for c in train}


def test_manifest_paths_resolve_and_audio_loads(tmp_path) -> None:
    samples = (np.sin(np.linspace(0, 100, 8000)) * 10000).astype(np.int16)
    (tmp_path / "corpus").mkdir()
    write_wav(tmp_path / "corpus" / "a.wav", samples, 8000)
    manifest = tmp_path / "corpus" / "manifest.csv"
    manifest.write_text("path,label,speaker\ncorpus/a.wav,yes,s1\n")
    (clip,) = read_manifest(manifest)
    assert clip.path.exists() and clip.label == "yes" and clip.speaker == "s1"
    from features.corpus import load_audio

    audio = load_audio(clip.path)
    assert len(audio) == 16000
    assert np.corrcoef(resample(to_float(samples), 8000), audio)[0, 1] > 0.999
