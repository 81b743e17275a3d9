"""The cluster recipes produce the options they claim: nothing Beam discards, every value kept."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from streaming.sidecar.options import dataflow_options, flink_options


@pytest.mark.parametrize(
    ("build", "claimed"),
    [
        (
            flink_options,
            dict(
                runner="FlinkRunner",
                streaming=True,
                flink_master="flink-jobmanager:8081",
                parallelism=8,
                checkpointing_interval=15_000,
                environment_type="DOCKER",
                job_name="sonolake-sidecar",
            ),
        ),
        (
            dataflow_options,
            dict(
                runner="DataflowRunner",
                streaming=True,
                project="acme-audio",
                region="europe-west1",
                temp_location="gs://acme-tmp/sonolake",
                enable_streaming_engine=True,
                autoscaling_algorithm="THROUGHPUT_BASED",
                max_num_workers=10,
            ),
        ),
    ],
)
def test_every_option_a_recipe_sets_survives(
    build: Any, claimed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    kwargs: dict[str, Any]
    if build is flink_options:
        kwargs = dict(flink_master="flink-jobmanager:8081", parallelism=8)
        kwargs["checkpointing_interval_ms"] = 15_000
    else:
        kwargs = dict(
            project="acme-audio", region="europe-west1", temp_location="gs://acme-tmp/sonolake"
        )
    with caplog.at_level(logging.WARNING):
        options: PipelineOptions = build(**kwargs)
        seen = options.get_all_options(retain_unknown_options=False)
    assert "Discarding" not in caplog.text
    kept = {name: seen.get(name) for name in claimed}
    assert kept == claimed
