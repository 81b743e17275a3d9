"""Models: everything about the keyword classifier, from labelled audio to the served session.

Datasets (:mod:`models.dataset` from the recordings, :mod:`models.lake_dataset` and
:mod:`models.lake_audio` from the lake), training in JAX (:mod:`models.training`), the bundle
format and ONNX export (:mod:`models.bundle`, :mod:`models.export`), the one evaluator
(:mod:`models.evaluation`), the one training pipeline (:mod:`models.candidate`), the MLflow
registry and the promotion gate (:mod:`models.registry`, :mod:`models.promotion`), drift
(:mod:`models.drift`, :mod:`models.drift_reference`) and the serving engine
(:mod:`models.serving` over :mod:`models.onnx_session`). Depends on ``features`` and
``lake_schemas`` only; nothing here reads settings.
"""
