"""The retraining job: training set → candidate → evaluation (gate) → champion."""

import dagster as dg

from orchestration.defs.training.keys import LIFECYCLE

retrain_job = dg.define_asset_job(
    name="retrain",
    selection=dg.AssetSelection.assets(*LIFECYCLE),
    description="Rebuild the training set from the lake, train, export, evaluate and promote "
    "through the gate. Started nightly and by the drift sensor.",
    tags={"domain": "training"},
)
