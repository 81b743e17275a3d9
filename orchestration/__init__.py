"""Orchestration: the Dagster code location, and only Dagster code.

Assets, asset checks, partitions, resources, jobs, schedules, sensors and ``Definitions``; the
work itself is done by ``models``, ``features``, ``streaming`` and ``lake_schemas``. What other
code may use (the demo, tests) is re-exported here: the definitions builder, the instance and
dbt set-up, and the names of the graph's assets, jobs and sensors.
"""

from orchestration.definitions import build_definitions
from orchestration.defs.analytics.invocation import analytics_database, generate_dbt_docs
from orchestration.defs.analytics.project import prepare_dbt_project
from orchestration.instance import prepare_dagster_home
from orchestration.keys import (
    CANDIDATE_MODEL,
    CHAMPION_MODEL,
    DRIFT_SENSOR,
    LIFECYCLE,
    LIVE_MODEL_COMPARISON,
    MODEL_EVALUATION,
    OBSERVE_JOB,
    RETRAIN_JOB,
    TRAINING_SET,
    TRIGGER_TAG,
    table_key,
)

__all__ = [
    "CANDIDATE_MODEL",
    "CHAMPION_MODEL",
    "DRIFT_SENSOR",
    "LIFECYCLE",
    "LIVE_MODEL_COMPARISON",
    "MODEL_EVALUATION",
    "OBSERVE_JOB",
    "RETRAIN_JOB",
    "TRAINING_SET",
    "TRIGGER_TAG",
    "analytics_database",
    "build_definitions",
    "generate_dbt_docs",
    "prepare_dagster_home",
    "prepare_dbt_project",
    "table_key",
]
