"""The bytes a compressed stream's client sent are device data like its PCM: erased and expired.

Real recordings are encoded as FLAC here, cut into frames, decoded by the gateway's decoder and
spooled as the gateway spools them (the frames in ``received``, their PCM in ``pcm``); the real
sidecar lands them. Proof is read from the files (every Parquet cell), as in test_erasure.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from lake_traces import local_parquet_traces
from real_lake import _write_spool, isolated_settings

from features.corpus import read_manifest, read_wav
from lake_schemas import AUDIO_CHUNKS
from lake_schemas.retention import expire_partitions
from sonolake import wiring
from sonolake.settings import Settings
from streaming.gateway.decode import StreamDecoder, encode_stream
from streaming.sidecar.driver import Sidecar, SidecarConfig
from streaming.spool import SpoolRecord
from streaming.spool.erasure import erase_everywhere
from streaming.spool.priming import DecoderPriming, load_decoder_priming, save_decoder_priming

FRAME_BYTES = 700


def _flac_session(
    samples: np.ndarray, device: str, session_id: str, start: datetime
) -> tuple[list[SpoolRecord], bytes]:
    """A FLAC stream's records as the gateway writes them, and the stream's header."""
    data = encode_stream(samples, 16_000, "flac", "flac")
    decoder = StreamDecoder(16_000, "flac")
    records = []
    for seq, at in enumerate(range(0, len(data), FRAME_BYTES)):
        frame = data[at : at + FRAME_BYTES]
        records.append(
            SpoolRecord.chunk(
                session_id=session_id,
                device_id=device,
                seq=seq,
                event_time=start + timedelta(milliseconds=100 * seq),
                received_at=start + timedelta(milliseconds=100 * seq),
                sample_rate=16_000,
                encoding="linear16",
                pcm=decoder.feed(frame),
                received=frame,
                received_encoding="flac",
                received_container="flac",
            )
        )
    decoder.close()
    assert decoder.header is not None
    return records, decoder.header


def _land(settings: Settings, records: list[SpoolRecord]) -> None:
    asyncio.run(_write_spool(settings.spool_path, records))
    lake = wiring.lake(settings)
    config = SidecarConfig(
        spool_dir=settings.spool_path, state_dir=settings.state_path / "sidecar", retention_s=0.0
    )
    sidecar = Sidecar(lake, config)
    while sidecar.land_once() is not None:
        pass


@pytest.mark.integration
def test_erasure_and_retention_remove_the_received_bytes(shared_data: Path, tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    clips = [
        c
        for c in read_manifest(shared_data / "speech_commands" / "manifest.csv")
        if not c.label.startswith("_")
    ][:3]
    now = datetime.now(UTC)
    sessions = {
        "dev-erased": ("a" * 32, now - timedelta(minutes=5)),
        "dev-kept": ("b" * 32, now - timedelta(minutes=5)),
        "dev-old": ("c" * 32, now - timedelta(days=40)),
    }
    records: list[SpoolRecord] = []
    sent: dict[str, set[bytes]] = {}
    for (device, (session_id, start)), clip in zip(sessions.items(), clips, strict=True):
        samples, _rate = read_wav(clip.path)
        mine, header = _flac_session(samples, device, session_id, start)
        records += mine
        sent[device] = {r.received for r in mine if r.received is not None}
        save_decoder_priming(
            settings.spool_path, DecoderPriming(session_id, device, "flac", "flac", header)
        )
    for device in sessions:  # a trace is a frame only this device sent (not FLAC padding)
        sent[device] -= {frame for other in sessions if other != device for frame in sent[other]}
    _land(settings, records)
    lake_root = Path(settings.lake_root)
    for device in sessions:
        assert local_parquet_traces(lake_root, device, sent[device]), "landed with its bytes"

    lake = wiring.lake(settings)
    result, purge = erase_everywhere(lake, settings.spool_path, "dev-erased", requested_by="t")
    assert result.rows[AUDIO_CHUNKS.name] == len(
        [r for r in records if r.device_id == "dev-erased"]
    )
    assert purge.primings_deleted == 1
    assert local_parquet_traces(lake_root, "dev-erased", sent["dev-erased"]) == {}
    assert load_decoder_priming(settings.spool_path, "a" * 32) is None
    assert load_decoder_priming(settings.spool_path, "b" * 32) is not None, "others untouched"
    kept = wiring.lake(settings).read(AUDIO_CHUNKS, filter=[("device_id", "=", "dev-kept")])
    assert set(kept.column("received").to_pylist()) >= sent["dev-kept"]

    expired = expire_partitions(wiring.lake(settings), 30, now.date(), vacuum_retention_hours=0)
    assert sum(expired.removed.values()) == len([r for r in records if r.device_id == "dev-old"])
    bronze = Path(wiring.lake(settings).uri(AUDIO_CHUNKS))  # silver keeps its rows
    assert local_parquet_traces(bronze, "dev-old", sent["dev-old"]) == {}
    assert local_parquet_traces(bronze, "dev-kept", sent["dev-kept"])
