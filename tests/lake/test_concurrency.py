"""Two processes appending to the same table at the same time lose nothing.

The test process is one writer and a child process the other; the child signals when it has
imported the lake, and both then append at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lake_rows import events
from support import REPO_ROOT

from lake_schemas import AUDIO_EVENTS, Lake

CHILD = Path(__file__).with_name("append_child.py")
BATCHES = 5
ROWS = 10


def test_concurrent_appends_from_two_processes_lose_nothing(lake: Lake) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            lake.root,
            json.dumps(lake.storage_options or {}),
            "writer-child",
            "10000",
            str(BATCHES),
            str(ROWS),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.stdin.write("go\n")
    child.stdin.flush()
    for batch in range(BATCHES):
        lake.append(
            AUDIO_EVENTS,
            events(ROWS, start=batch * ROWS),
            writer="writer-test",
            app_id="writer-test",
            app_version=batch,
        )
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output

    ids = lake.read(AUDIO_EVENTS, columns=["event_id"]).column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 * BATCHES * ROWS
    version = lake.version(AUDIO_EVENTS)
    assert version == 2 * BATCHES  # version 0 is the one CREATE; one commit per batch
    for writer in ("writer-test", "writer-child"):
        assert lake.transaction_version(AUDIO_EVENTS, writer) == BATCHES - 1
    # Each writer recorded its versions (and any gap before them) in the shared catalog.
    recorded = Lake(lake.root, lake.storage_options).catalog.versions(AUDIO_EVENTS.name)
    assert [v.version for v in recorded] == list(range(version + 1))
    assert {v.writer for v in recorded[1:]} == {"writer-test", "writer-child"}
    assert recorded[-1].rows == 2 * BATCHES * ROWS
