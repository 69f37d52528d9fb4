"""Replication lag per resource and region: the oldest eligible backup without a replica there, and its age."""
import dataclasses
import datetime as dt

from cbr_replication.domain.lag import replication_lag
from cbr_replication.domain.model import Destination, ReplicationRecord, SourceBackup

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


def backup(backup_id: str, resource_id: str, hours_ago: int) -> SourceBackup:
    return SourceBackup(backup_id=backup_id, project_id="p", vault_id="v", name=backup_id, description="",
                        status="available", image_type="backup", corrupt=False, parent_id="",
                        resource_id=resource_id, resource_type="disk", created_time=NOW - hours_ago * HOUR)


def record(backup_id: str, region: str, status: str = "success") -> ReplicationRecord:
    return ReplicationRecord(replication_record_id=f"r-{backup_id}-{region}", project_id="p", source_region="a",
                             source_vault_id="v", source_backup_id=backup_id,
                             destination=Destination(region, "q", "dv"), status=status, created_time=NOW,
                             updated_time=NOW)


def test_lag_is_the_age_of_the_oldest_backup_without_a_replica_there():
    backups = [backup("d1-old", "d1", 30), backup("d1-mid", "d1", 20), backup("d1-new", "d1", 10),
               backup("d2-only", "d2", 5)]
    records = [record("d1-old", "b"), record("d1-mid", "b", "failed"), record("d1-new", "b"), record("d1-old", "c"),
               record("d1-mid", "c"), record("d1-new", "c"), record("d2-only", "b", "replicating")]
    lags = replication_lag(backups, records, ["b", "c"], NOW)
    summary = [(g.resource_id, g.destination_region, g.oldest_unreplicated and g.oldest_unreplicated.backup_id,
                g.lag, g.unreplicated_backups, g.newest_replicated_backup_id) for g in lags]
    assert summary == [
        ("d1", "b", "d1-mid", 20 * HOUR, 1, "d1-new"),
        ("d1", "c", None, dt.timedelta(0), 0, "d1-new"),
        ("d2", "b", "d2-only", 5 * HOUR, 1, ""),    # under way is not a replica yet
        ("d2", "c", "d2-only", 5 * HOUR, 1, ""),
    ]


def test_no_backups_no_lag():
    assert replication_lag([], [record("x", "b")], ["b"], NOW) == []


def test_a_backup_from_the_future_does_not_lag_negatively():
    ahead = dataclasses.replace(backup("d1", "d1", 0), created_time=NOW + HOUR)
    [lag] = replication_lag([ahead], [], ["b"], NOW)
    assert lag.lag == dt.timedelta(0) and lag.unreplicated_backups == 1
