"""The lake's contract: table specs, the ``Lake`` that reads and writes them, the catalog.

    from lake_schemas import Lake, AUDIO_EVENTS
    lake = Lake("./lakehouse")
    lake.append(AUDIO_EVENTS, batch, writer="sidecar", app_id="sidecar-1", app_version=42)
    lake.read(AUDIO_EVENTS, filter=[("device_id", "=", "spk-abc")])

See docs/lake.md for the one-writer rule, app transactions, time travel and SQL.
"""

from lake_schemas.catalog import MetadataCatalog, QualityResult, SchemaVersion, TableEntry
from lake_schemas.errors import (
    LakeError,
    NotReadOnly,
    SchemaMismatch,
    TableNotFound,
    VersionNotFound,
)
from lake_schemas.lake import CommitResult, CompactionPolicy, Lake, TableSnapshot
from lake_schemas.tables import (
    ALL_TABLES,
    AUDIO_CHUNKS,
    AUDIO_EVENTS,
    AUDIO_FEATURES,
    DEAD_LETTERS,
    DRIFT_REPORTS,
    ERASURES,
    MODEL_EVALUATIONS,
    PREDICTIONS,
    SESSIONS,
    TABLES,
    TIMESTAMP,
    TableSpec,
    get_table,
)

__all__ = [
    "ALL_TABLES",
    "AUDIO_CHUNKS",
    "AUDIO_EVENTS",
    "AUDIO_FEATURES",
    "DEAD_LETTERS",
    "DRIFT_REPORTS",
    "ERASURES",
    "MODEL_EVALUATIONS",
    "PREDICTIONS",
    "SESSIONS",
    "TABLES",
    "TIMESTAMP",
    "CommitResult",
    "CompactionPolicy",
    "Lake",
    "LakeError",
    "MetadataCatalog",
    "NotReadOnly",
    "QualityResult",
    "SchemaMismatch",
    "SchemaVersion",
    "TableEntry",
    "TableNotFound",
    "TableSnapshot",
    "TableSpec",
    "VersionNotFound",
    "get_table",
]
