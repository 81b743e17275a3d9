"""The in-process runner's options: one view per options class, sharing the values."""

from __future__ import annotations

import copy
import pickle

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


def test_a_copy_has_its_own_views_over_its_own_values() -> None:
    options = local_options()
    options.view_as(StandardOptions)
    copied = copy.deepcopy(options)
    assert "_views" not in copied.__dict__, "the views are not copied"
    assert copied.view_as(StandardOptions).runner == "BundleBasedDirectRunner"
    copied.view_as(StandardOptions).streaming = True
    assert copied.get_all_options()["streaming"] is True
    assert options.view_as(StandardOptions).streaming is False, "the copy's values are its own"
    assert pickle.loads(pickle.dumps(options)).view_as(TypeOptions).pipeline_type_check is False
