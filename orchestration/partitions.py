"""Time partitions: one partition per UTC event date, never one per device.

A device is a column of every table; a partition per device would be dynamic and grow without
bound (Dagster slows down past tens of thousands of partitions). ``end_offset=1`` makes today's
partition exist while the day is still being filled, so features of today's events can be
computed as soon as the sidecar lands them.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

EVENT_DATE_START = "2025-01-01"
"""First event date the asset graph knows about (UTC)."""

event_date_partitions = dg.DailyPartitionsDefinition(
    start_date=EVENT_DATE_START, timezone="UTC", end_offset=1
)


def partition_key_for(day: date) -> str:
    """The partition key (``YYYY-MM-DD``) of a UTC event date."""
    return day.isoformat()
