"""Jobs of the ingestion domain."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.ingestion.assets import SIDECAR_TABLES
from orchestration.keys import OBSERVE_JOB, table_key

observe_sidecar_tables_job = dg.define_asset_job(
    name=OBSERVE_JOB,
    selection=dg.AssetSelection.assets(*(table_key(spec) for spec in SIDECAR_TABLES)),
    description="Observe bronze and silver (Delta version, rows) and run their quality checks.",
    tags={"domain": "ingestion"},
)
