"""Asset keys of the model lifecycle, shared by the training, monitoring and job modules."""

import dagster as dg

TRAINING_SET = dg.AssetKey(["training", "training_set"])
CANDIDATE_MODEL = dg.AssetKey(["training", "candidate_model"])
MODEL_EVALUATION = dg.AssetKey(["training", "model_evaluation"])
CHAMPION_MODEL = dg.AssetKey(["training", "champion_model"])

LIFECYCLE = (TRAINING_SET, CANDIDATE_MODEL, MODEL_EVALUATION, CHAMPION_MODEL)
"""Retraining materializes these, in this order."""
