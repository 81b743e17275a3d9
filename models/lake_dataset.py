"""The training set from the lake: labelled events as windows, split so no device is on both sides.

Every event in silver.audio_events whose client sent a ground-truth label becomes one example:
the audio the gateway classified for it (the utterance with its pre-roll and tail), reassembled
from bronze (:mod:`models.lake_audio`), fitted to the classifier's 1-s window as live. Labels
outside the model's vocabulary (e.g. the digits of telephone traffic) count as ``_unknown_``,
which is what they are to a keyword spotter. The group of an example is its
device, whatever the device is called: the split hashes the device id with the corpus split's
hash (:func:`models.dataset.split_by_group`), so held-out accuracy always means "on devices the
model never heard". A client that streams each speaker as one device (the replay tool does)
gets a speaker-disjoint split; which speakers are held out follows from their device ids.

Background noise has no speech, so the sidecar finds no event in it; the ``_silence_`` class is
built from bronze directly: each run of consecutive chunks a client labelled ``_silence_`` gives
one window. Without it a model trained from the lake could never answer "nothing was said".

The windows are stored once as int16 PCM in a ``.npz`` under the caller's folder (they are
audio, and a 3,000-clip set is ~100 MB); :class:`TrainingSet` is a small reference to that file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import CLASSIFIER_WINDOW_SAMPLES, FEATURE_VERSION, SUMMARY_COLUMNS, fit_window
from features.pcm import to_float, to_pcm16
from lake_schemas import AUDIO_CHUNKS, AUDIO_EVENTS, AUDIO_FEATURES, Lake
from models.dataset import (
    LABELS,
    SILENCE,
    HeldoutSet,
    LabelledWindows,
    label_index,
    split_by_group,
)
from models.lake_audio import (
    CHUNK_COLUMNS,
    EVENT_COLUMNS,
    consecutive_runs,
    read_event_audio,
    run_audio_16k,
)


@dataclass(frozen=True)
class TrainingSet:
    """Where the windows are and what they hold."""

    path: str
    set_id: str
    n_train: int
    n_test: int
    train_devices: int
    test_devices: int
    built_at: datetime
    """When the set was read from the lake: features computed later are of events it lacks."""
    data_until: datetime | None
    """Start time (device clock) of the newest event in the set, for information."""
    label_counts: dict[str, int]

    def load(self) -> tuple[LabelledWindows, np.ndarray, np.ndarray, np.ndarray]:
        """(all windows, train rows, test rows, event ids)."""
        with np.load(self.path, allow_pickle=True) as data:
            windows = to_float(data["pcm"])
            labelled = LabelledWindows(windows, data["labels"], data["groups"])
            return labelled, data["train"], data["test"], data["event_ids"]

    def training_side(self) -> tuple[LabelledWindows, list[str]]:
        """The training devices' windows and their event ids (for the drift reference)."""
        labelled, train, _, event_ids = self.load()
        return labelled.subset(train), [str(event_ids[i]) for i in train]

    def heldout(self) -> HeldoutSet:
        """The held-out devices' windows, named after the set (what the gate scores on)."""
        labelled, _, test, _ = self.load()
        return HeldoutSet(
            name=f"lake:training-set-{self.set_id}#heldout-devices",
            windows=labelled.windows[test].astype(np.float32),
            labels=tuple(LABELS[i] for i in labelled.labels[test]),
        )


def labelled_events(lake: Lake) -> pa.Table:
    """Events with a ground-truth label, oldest first."""
    events = lake.read(
        AUDIO_EVENTS,
        columns=[*EVENT_COLUMNS, "device_id", "label"],
        filter=pc.field("label").is_valid(),
    )
    return events.sort_by("start_time")


def _no_windows() -> np.ndarray:
    return np.zeros((0, CLASSIFIER_WINDOW_SAMPLES), np.float32)


def event_windows(lake: Lake, events: pa.Table) -> tuple[list[str], np.ndarray]:
    """(event ids, windows [N, 16000] float32) of the events whose chunks are all in bronze.

    Each window is what the gateway classified for that event (the utterance with its pre-roll
    and tail, fitted to 1 s), not the bare speech span: trained on the bare span, a model met
    200 ms more onset and 100 ms more tail in serving than it ever saw.
    """
    ids, windows = [], []
    for event in read_event_audio(lake, events, classified=True):
        ids.append(event.event_id)
        windows.append(fit_window(event.audio_16k))
    return ids, np.stack(windows) if windows else _no_windows()


def silence_windows(lake: Lake) -> tuple[list[dict[str, object]], np.ndarray]:
    """One window per run of consecutive chunks labelled ``_silence_`` (rows, windows)."""
    chunks = lake.read(
        AUDIO_CHUNKS,
        columns=[*CHUNK_COLUMNS, "device_id"],
        filter=pc.field("label") == SILENCE,
    )
    rows, windows = [], []
    for run in consecutive_runs(chunks):
        audio = run_audio_16k(run)
        windows.append(
            audio[:CLASSIFIER_WINDOW_SAMPLES]
            if audio.size >= CLASSIFIER_WINDOW_SAMPLES
            else fit_window(audio)
        )
        first = run.slice(0, 1).to_pylist()[0]
        rows.append(
            {
                "event_id": f"{first['session_id']}:{first['seq']}:silence",
                "device_id": first["device_id"],
                "label": SILENCE,
                "start_time": first["event_time"],
            }
        )
    return rows, np.stack(windows).astype(np.float32) if windows else _no_windows()


def write_training_set(lake: Lake, out_dir: Path) -> TrainingSet:
    """Build the set from the lake, store it under ``out_dir`` and describe it."""
    built_at = datetime.now(UTC)
    events = labelled_events(lake)
    ids, windows = event_windows(lake, events)
    info = {
        r["event_id"]: r
        for r in events.select(["event_id", "device_id", "label", "start_time"]).to_pylist()
    }
    silence_rows, silence = silence_windows(lake)
    info.update({r["event_id"]: r for r in silence_rows})
    ids += [str(r["event_id"]) for r in silence_rows]
    windows = np.concatenate([windows, silence]) if len(silence) else windows
    labels = [info[i]["label"] for i in ids]
    groups = np.asarray([info[i]["device_id"] for i in ids], dtype=object)
    labelled = LabelledWindows.from_arrays(windows, labels, groups)
    train, test = split_by_group(labelled.groups)
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"training-set-{digest}.npz"
    if not path.exists():
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            pcm=to_pcm16(windows),
            labels=labelled.labels,
            groups=labelled.groups,
            train=train,
            test=test,
            event_ids=np.asarray(ids, dtype=object),
        )
        tmp.replace(path)
    counts: dict[str, int] = {}
    for index in labelled.labels:
        counts[LABELS[index]] = counts.get(LABELS[index], 0) + 1
    starts = [info[i]["start_time"] for i in ids]
    return TrainingSet(
        path=str(path),
        set_id=digest,
        n_train=len(train),
        n_test=len(test),
        train_devices=len(set(groups[train])) if len(train) else 0,
        test_devices=len(set(groups[test])) if len(test) else 0,
        built_at=built_at,
        data_until=max(starts) if starts else None,
        label_counts=dict(sorted(counts.items(), key=lambda kv: label_index(kv[0]))),
    )


def reference_features(lake: Lake, event_ids: list[str]) -> pa.Table:
    """gold.audio_features of these events as a table with one column per summary feature."""
    if not lake.exists(AUDIO_FEATURES) or not event_ids:
        return pa.table({c: pa.array([], pa.float32()) for c in SUMMARY_COLUMNS})
    rows = lake.read(
        AUDIO_FEATURES,
        columns=["features"],
        filter=(pc.field("feature_version") == FEATURE_VERSION)
        & pc.field("event_id").isin(pa.array(event_ids, pa.string())),
    )
    matrix = np.asarray(rows.column("features").to_pylist(), dtype=np.float32).reshape(
        -1, len(SUMMARY_COLUMNS)
    )
    return pa.table({c: matrix[:, i] for i, c in enumerate(SUMMARY_COLUMNS)})
