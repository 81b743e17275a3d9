"""Asset keys of the lake's tables: ``[layer, table]``, the same names analysts use in SQL.

One place maps a :class:`~lake_schemas.tables.TableSpec` to its Dagster key, so the sidecar's
observed tables, the assets that write gold and monitoring tables, and the dbt sources all
agree on ``bronze/audio_chunks``, ``silver/audio_events`` and so on.
"""

from __future__ import annotations

import dagster as dg

from lake_schemas.tables import TableSpec


def table_key(spec: TableSpec) -> dg.AssetKey:
    """``AssetKey([layer, table])`` of a lake table."""
    return dg.AssetKey([spec.layer, spec.table])
