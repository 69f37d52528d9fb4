"""SampledGauge: a sample replaces the whole set (a gone subject leaves), or one group of it."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from cbr_common.metrics import SampledGauge


def test_a_sample_replaces_the_set_or_one_group():
    registry = CollectorRegistry()
    lag = SampledGauge("test_lag_seconds", "a lag", ["vault_id", "resource_id"], registry=registry)
    lag.replace({("v1", "a"): 5, ("v1", "b"): 7, ("v2", "c"): 1})
    lag.replace({("v1", "a"): 6}, group="v1")  # v1 measured again: b is gone from it; v2 untouched
    assert (lag.value("v1", "a"), lag.value("v1", "b"), lag.value("v2", "c")) == (6, None, 1)
    text = generate_latest(registry).decode()
    assert 'test_lag_seconds{resource_id="a",vault_id="v1"} 6.0' in text and 'resource_id="b"' not in text
    lag.replace({})
    assert 'test_lag_seconds{' not in generate_latest(registry).decode()
