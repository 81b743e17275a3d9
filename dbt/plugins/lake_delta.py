"""dbt-duckdb plugin: the lake's Delta tables as dbt sources, empty until something writes them.

dbt-duckdb's own ``delta`` plugin fails a whole build when one source table does not exist yet,
and some never do on a young lake (no dead letter, no drift report). Here such a source reads as
an empty table with the lake's own columns for it (:data:`lake_schemas.TABLES`, the contract
every writer uses), so every model and test still binds and ``dbt build`` / ``dbt docs
generate`` succeed.

S3 credentials come from the plugin's config (``profiles.yml`` reads them from the environment
with ``env_var``), never from the sources' meta, which dbt writes into ``manifest.json``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dbt.adapters.duckdb.plugins import delta
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable

CREDENTIAL_OPTIONS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
}
"""Plugin config key → delta-rs storage option."""


class Plugin(delta.Plugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.credentials = {
            option: str(config[key])
            for key, option in CREDENTIAL_OPTIONS.items()
            if config.get(key)
        }

    def load(self, source_config: SourceConfig) -> Any:
        options = {**(source_config.get("storage_options") or {}), **self.credentials}
        path = source_config["delta_table_path"]
        if DeltaTable.is_deltatable(path, storage_options=options or None):
            return super().load(_with_options(source_config, options))
        return _empty_table(f"{source_config.schema}.{source_config.identifier}")


def _with_options(source_config: SourceConfig, options: dict[str, str]) -> SourceConfig:
    meta = {**source_config.meta, "storage_options": options}
    return SourceConfig(
        name=source_config.name,
        identifier=source_config.identifier,
        schema=source_config.schema,
        database=source_config.database,
        meta=meta,
        tags=source_config.tags,
    )


def _empty_table(name: str) -> pa.Table:
    from lake_schemas import get_table

    return get_table(name).schema.empty_table()
