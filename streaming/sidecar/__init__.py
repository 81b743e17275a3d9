"""The sidecar: sealed spool segments → Delta tables, exactly once.

:mod:`~streaming.sidecar.pipeline` is the Beam landing transform (it does not know its source
or runner); :mod:`~streaming.sidecar.driver` runs it in micro-batches with durable manifests
and Delta application transactions; :mod:`~streaming.sidecar.options` builds the pipeline
options for the in-process runner and for clusters.
"""
