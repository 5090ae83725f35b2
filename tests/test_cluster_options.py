"""The coordinator's options: one typed record, checked before anything starts."""

from __future__ import annotations

import pytest

from shardguard.errors import ConfigError
from shardguard.partition import bind
from shardguard.runtime.cluster import Cluster, ClusterOptions

from .conftest import planned, write_plan


@pytest.fixture(scope="module")
def bound(tmp_path_factory):
    return bind(write_plan(tmp_path_factory.mktemp("plan"), planned()))


def test_options_and_keywords_build_the_same_coordinator(bound):
    workers = {d: f"tcp://127.0.0.1:{9000 + i}"
               for i, d in enumerate(bound.plan.devices_used())}
    options = ClusterOptions(workers=workers, window=4, deadline_s=2.0, on_reject="drop")
    by_options = Cluster.from_options(bound, options)
    by_keywords = Cluster(bound, workers=workers, window=4, deadline_s=2.0, on_reject="drop")
    try:
        assert by_options.options == by_keywords.options == options
        assert by_options.window == 4
    finally:
        by_options.close()
        by_keywords.close()


@pytest.mark.parametrize("keywords, named", [
    ({}, "--workers"),
    ({"spawn_local": True, "on_reject": "ignore"}, "on_reject"),
    ({"spawn_local": True, "vote": 4}, "vote must be"),
    ({"spawn_local": True, "vote": 2, "freivalds": 2}, "choose one"),
])
def test_a_bad_option_is_refused_before_any_worker_starts(keywords, named):
    with pytest.raises(ConfigError, match=named):
        ClusterOptions(**keywords)


def test_a_device_without_a_worker_address_is_named(bound):
    device = bound.plan.devices_used()[0]
    with pytest.raises(ConfigError, match="no worker address"):
        Cluster(bound, workers={device: "tcp://127.0.0.1:9000"})
