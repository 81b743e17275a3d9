"""The in-process runner's options: one view per options class, sharing the values."""

from __future__ import annotations

from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

from streaming.sidecar.options import local_options


def test_views_are_made_once_and_share_the_options_values() -> None:
    options = local_options()
    standard = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is standard
    assert standard.runner == "BundleBasedDirectRunner"
    assert options.view_as(TypeOptions).pipeline_type_check is False
    standard.streaming = True  # a change through one view is seen through every other
    assert options.get_all_options()["streaming"] is True
    assert local_options().view_as(StandardOptions).streaming is False  # a fresh batch's own
