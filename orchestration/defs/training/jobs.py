"""The retraining job: training set → candidate → evaluation (gate) → champion."""

import dagster as dg

from orchestration.keys import LIFECYCLE, RETRAIN_JOB

retrain_job = dg.define_asset_job(
    name=RETRAIN_JOB,
    selection=dg.AssetSelection.assets(*LIFECYCLE),
    description="Rebuild the training set from the lake, train, export, evaluate and promote "
    "through the gate. Started nightly and by the drift sensor.",
    tags={"domain": "training"},
)
