"""``sonolake demo``: the whole loop, end to end, on the embedded defaults.

:mod:`sonolake.demo.processes` starts and stops the servers, :mod:`sonolake.demo.corpora`
chooses (or synthesises) the recordings, :mod:`sonolake.demo.graph` runs the Dagster asset
graph in process on the real instance, :mod:`sonolake.demo.run` is the sequence of stages and
:mod:`sonolake.demo.summary` what it reports.
"""
