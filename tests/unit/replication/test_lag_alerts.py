"""The lag alert's crossing rule: published once per crossing of the threshold, again only after a recovery."""
import datetime as dt

from cbr_replication.domain.lag import Lag
from cbr_replication.domain.lag_alerts import crossings
from cbr_replication.domain.model import SourceBackup

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
DAY = 24 * HOUR


def lag(resource_id: str, region: str, age: dt.timedelta | None) -> Lag:
    """A lag of `age`; None: nothing left to replicate."""
    oldest = None if age is None else SourceBackup(
        backup_id=f"b-{resource_id}", project_id="p", vault_id="v", name="", description="", status="available",
        image_type="backup", corrupt=False, parent_id="", resource_id=resource_id, resource_type="disk",
        created_time=NOW - age)
    return Lag(resource_id, "disk", region, oldest, age or dt.timedelta(0), 0 if age is None else 1, "")


def test_a_lag_reaching_the_threshold_crosses_once_per_resource_and_region():
    lags = [lag("d1", "b", DAY), lag("d1", "c", DAY - HOUR), lag("d2", "b", 3 * DAY), lag("d3", "b", None)]
    first = crossings(lags, set(), DAY)
    assert [(g.resource_id, g.destination_region) for g in first.crossed] == [("d1", "b"), ("d2", "b")]
    assert first.recovered == set()
    again = crossings(lags, {("d1", "b"), ("d2", "b")}, DAY)  # still lagging: nothing new
    assert again.crossed == [] and again.recovered == set()


def test_a_recovered_lag_may_cross_again():
    recovered = crossings([lag("d1", "b", HOUR), lag("d2", "b", None)], {("d1", "b"), ("d2", "b")}, DAY)
    assert recovered.crossed == [] and recovered.recovered == {("d1", "b"), ("d2", "b")}
    crossed = crossings([lag("d1", "b", 2 * DAY)], set(), DAY)
    assert [g.resource_id for g in crossed.crossed] == ["d1"]


def test_a_resource_no_longer_measured_counts_as_recovered():
    assert crossings([], {("gone", "b")}, DAY).recovered == {("gone", "b")}


def test_a_zero_threshold_is_off():
    off = crossings([lag("d1", "b", 30 * DAY)], {("d2", "b")}, dt.timedelta(0))
    assert off.crossed == [] and off.recovered == {("d2", "b")}
