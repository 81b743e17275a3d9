"""Child process for the concurrency test: append batches to one table as its own writer.

Usage: append_child.py ROOT STORAGE_OPTIONS_JSON WRITER FIRST_ID BATCHES ROWS
Prints "ready" once imported, then starts when a line arrives on stdin, so that the two
children really append at the same time.
"""

from __future__ import annotations

import json
import sys

from lake_rows import events

from lake_schemas import AUDIO_EVENTS, Lake


def main(argv: list[str]) -> int:
    root, options, writer, first_id, batches, rows = argv
    lake = Lake(root, json.loads(options) or None)
    print("ready", flush=True)
    sys.stdin.readline()
    for batch in range(int(batches)):
        start = int(first_id) + batch * int(rows)
        lake.append(
            AUDIO_EVENTS,
            events(int(rows), start=start),
            writer=writer,
            app_id=writer,
            app_version=batch,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
