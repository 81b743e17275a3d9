"""Audio and training windows read back from a lake the real sidecar landed."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from real_lake import LakeEnv

from features import SUMMARY_COLUMNS, summary_features
from features.window import UTTERANCE_PRE_ROLL_MS, UTTERANCE_TAIL_MS
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, SESSIONS
from models.dataset import SILENCE
from models.lake_audio import CHUNK_COLUMNS, EVENT_COLUMNS, event_segments
from models.lake_dataset import write_training_set
from sonolake import wiring


def test_reassembled_event_audio_matches_the_sidecars_measurements(small_lake: LakeEnv) -> None:
    """The event audio put back together from bronze has the duration and level silver says."""
    lake = wiring.lake(small_lake.settings)
    events = lake.read(AUDIO_EVENTS, columns=[*EVENT_COLUMNS, "rms_dbfs"])
    chunks = lake.read(AUDIO_CHUNKS, columns=CHUNK_COLUMNS)
    by_id = {r["event_id"]: r for r in events.to_pylist()}
    segments = list(event_segments(events, chunks))
    assert len(segments) == events.num_rows
    for segment in segments:
        row = by_id[segment.event_id]
        assert abs(segment.audio_16k.size / 16000 - row["duration_s"]) < 0.002
        rms = summary_features(segment.audio_16k)[SUMMARY_COLUMNS.index("rms_dbfs")]
        assert abs(rms - row["rms_dbfs"]) < 0.5, "same audio, same level (dBFS)"


def test_training_windows_hold_what_the_gateway_classified(small_lake: LakeEnv) -> None:
    """The classified span is the event's segment with the gateway's pre-roll before it (read
    from the chunks before the event's range) and its tail after: the same samples, extended."""
    lake = wiring.lake(small_lake.settings)
    events = lake.read(AUDIO_EVENTS, columns=EVENT_COLUMNS)
    chunks = lake.read(AUDIO_CHUNKS, columns=CHUNK_COLUMNS)
    bare = {s.event_id: s.audio_16k for s in event_segments(events, chunks)}
    heard = {s.event_id: s.audio_16k for s in event_segments(events, chunks, classified=True)}
    assert heard.keys() == bare.keys()
    pre_roll, tail = UTTERANCE_PRE_ROLL_MS * 16, UTTERANCE_TAIL_MS * 16
    aligned = 0
    for event_id, segment in bare.items():
        window = heard[event_id]
        assert segment.size <= window.size <= segment.size + pre_roll + tail
        inside = window[pre_roll : pre_roll + segment.size]
        aligned += inside.size == segment.size and np.allclose(inside, segment, atol=2e-3)
    assert aligned >= 0.9 * len(bare), "past a session's first 200 ms: all the pre-roll, then it"


def test_an_event_with_a_chunk_missing_is_left_out(small_lake: LakeEnv) -> None:
    lake = wiring.lake(small_lake.settings)
    events = lake.read(AUDIO_EVENTS, columns=EVENT_COLUMNS)
    first = events.slice(0, 1).to_pylist()[0]
    chunks = lake.read(AUDIO_CHUNKS, columns=CHUNK_COLUMNS)
    missing = pc.and_(
        pc.equal(chunks.column("session_id"), first["session_id"]),
        pc.equal(chunks.column("seq"), first["first_seq"]),
    )
    segments = {s.event_id for s in event_segments(events, chunks.filter(pc.invert(missing)))}
    assert first["event_id"] not in segments and len(segments) == events.num_rows - 1


def test_training_set_groups_by_device_whatever_its_name(small_lake: LakeEnv) -> None:
    """The split's groups are the lake's device ids as they are: no naming convention of any
    client is assumed, and no device is on both sides."""
    lake = wiring.lake(small_lake.settings)
    built = write_training_set(lake, small_lake.root / "sets")
    labelled, train, test, _ = built.load()
    devices = set(lake.read(SESSIONS, columns=["device_id"]).column(0).to_pylist())
    assert set(labelled.groups) <= devices
    assert not set(labelled.groups[train]) & set(labelled.groups[test])
    assert built.n_train > 0 and built.n_test > 0
    assert built.label_counts.get(SILENCE, 0) > 0, "runs of labelled silence give the class"
    heldout = built.heldout()
    assert len(heldout.labels) == built.n_test and heldout.windows.dtype == np.float32
    training, event_ids = built.training_side()
    assert len(training) == len(event_ids) == built.n_train
