"""The replication service's pure rules: request checks with their codes, and how task updates move a record."""
import dataclasses
import datetime as dt

import pytest

from cbr_replication.domain import errors, rules
from cbr_replication.domain.model import Counters, Destination, ReplicationRecord, SourceBackup, TaskUpdate

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
LATER = NOW + dt.timedelta(minutes=1)
VAULT = "0f9e1c2a-3b4d-4e5f-8a6b-7c8d9e0f1a2b"
DEST = Destination("region-b", "project-b", VAULT)
DIGEST = bytes(range(32))


def record(**changes) -> ReplicationRecord:
    base = ReplicationRecord(replication_record_id="r1", project_id="p", source_region="region-a",
                             source_vault_id="v", source_backup_id="b", destination=DEST, status="waiting",
                             created_time=NOW, updated_time=NOW, name="daily")
    return dataclasses.replace(base, **changes)


def update(state: str, **fields) -> TaskUpdate:
    return TaskUpdate(project_id="p", replication_record_id="r1", state=state, task_id="t1", **fields)


def backup(**changes) -> SourceBackup:
    base = SourceBackup(backup_id="b", project_id="p", vault_id="v", name="n", description="", status="available",
                        image_type="backup", corrupt=False, parent_id="", resource_id="d", resource_type="disk")
    return dataclasses.replace(base, **changes)


def code(exc_info) -> str:
    return exc_info.value.cbr_code


@pytest.mark.parametrize("destination, expected", [
    (Destination("region-a", "project-b", VAULT), "ReplicationService.6902"),
    (Destination("region-z", "project-b", VAULT), "ReplicationService.6901"),
    (Destination("region-b", "", VAULT), "ReplicationService.6911"),
    (Destination("region-b", "project b", VAULT), "ReplicationService.6911"),
    (Destination("region-b", "project-b", "not-a-uuid"), "ReplicationService.6911"),
])
def test_destination_refusals(destination, expected):
    with pytest.raises(Exception) as caught:
        rules.check_destination(destination, "region-a", ["region-b", "region-c"])
    assert code(caught) == expected


def test_a_peer_destination_passes():
    assert rules.check_destination(DEST, "region-a", ["region-b"]) == DEST


@pytest.mark.parametrize("changes, expected", [
    ({"image_type": "replication"}, "ReplicationService.6905"),
    ({"status": "protecting"}, "ReplicationService.6904"),
    ({"status": "error"}, "ReplicationService.6904"),
    ({"parent_id": "server-backup"}, "ReplicationService.6904"),
    ({"corrupt": True}, "ReplicationService.6906"),
    ({"image_type": "replication", "corrupt": True}, "ReplicationService.6905"),  # a replica first of all
])
def test_source_refusals(changes, expected):
    with pytest.raises(Exception) as caught:
        rules.check_source(backup(**changes))
    assert code(caught) == expected


@pytest.mark.parametrize("check, value", [
    (rules.check_name, "x" * 65), (rules.check_name, "a/b"), (rules.check_description, "d" * 256),
    (rules.check_request_id, "has space"), (rules.check_request_id, "r" * 65),
    (rules.check_status_filter, "unknown"), (lambda v: rules.check_id(v, "backup_id"), "nope"),
])
def test_malformed_input_is_6911(check, value):
    with pytest.raises(errors.MalformedRequestError) as caught:
        check(value)
    assert code(caught) == "ReplicationService.6911"


@pytest.mark.parametrize("limit, offset", [(-1, 0), (1001, 0), (10, -1)])
def test_bad_paging_is_6911(limit, offset):
    with pytest.raises(errors.MalformedRequestError):
        rules.check_page(limit, offset)


def test_same_request_ignores_empty_name_and_description():
    r = record(description="nightly")
    assert rules.same_request(r, "b", DEST, "", "")
    assert rules.same_request(r, "b", DEST, "daily", "nightly")
    assert not rules.same_request(r, "b", DEST, "other", "")
    assert not rules.same_request(r, "other", DEST, "", "")
    assert not rules.same_request(r, "b", dataclasses.replace(DEST, vault_id="x"), "", "")


def test_standing_record_prefers_the_replica_then_an_open_one():
    failed, success, waiting = record(status="failed"), record(status="success"), record(status="waiting")
    assert rules.standing_record([failed, success, waiting]) is success
    assert rules.standing_record([failed, waiting]) is waiting
    assert rules.standing_record([failed, record(status="cancelled")]) is None
    assert rules.standing_record([]) is None


def test_a_record_follows_its_task_to_success():
    r = rules.apply_update(record(), update("created"), NOW)
    assert (r.task_id, r.status) == ("t1", "waiting")
    r = rules.apply_update(r, update("started", attempt=1), NOW)
    assert (r.status, r.attempt, r.started_time) == ("replicating", 1, NOW)
    counters = Counters(chunk_bytes_sent=100, present_bytes=50, resent_bytes=7, metadata_bytes=9)
    r = rules.apply_update(r, update("progress", attempt=1, progress=40, bytes_done=40, bytes_total=100,
                                     counters=counters), LATER)
    assert (r.progress, r.bytes_done, r.bytes_total, r.transferred_bytes) == (40, 40, 100, 107)
    assert r.started_time == NOW
    r = rules.apply_update(r, update("completed", attempt=1, bytes_total=100, destination_backup_id="rb",
                                     source_manifest_digest=DIGEST, replica_manifest_digest=DIGEST), LATER)
    assert (r.status, r.progress, r.destination_backup_id, r.ended_time) == ("success", 100, "rb", LATER)
    assert r.source_manifest_digest == r.replica_manifest_digest == DIGEST


def test_a_failed_attempt_waits_for_the_next_and_a_later_success_clears_its_error():
    r = rules.apply_update(record(status="replicating", attempt=1), update(
        "retrying", attempt=1, error_code="ReplicationService.6920", error_message="no answer"), NOW)
    assert (r.status, r.attempt, r.error_code, r.ended_time) == ("waiting", 1, "ReplicationService.6920", None)
    assert rules.apply_update(r, update("progress", attempt=0, progress=90), LATER) is None  # an older attempt's
    assert rules.apply_update(r, update("started", attempt=1), LATER) is None  # came after its retrying: ended
    r = rules.apply_update(r, update("started", attempt=2), LATER)
    assert (r.status, r.attempt) == ("replicating", 2)
    assert rules.apply_update(r, update("retrying", attempt=1), LATER) is None  # came late: ignored
    r = rules.apply_update(r, update("completed", attempt=2, destination_backup_id="rb",
                                     source_manifest_digest=DIGEST, replica_manifest_digest=DIGEST), LATER)
    assert (r.status, r.error_code, r.error_message) == ("success", "", "")


def test_differing_digests_fail_the_record():
    r = rules.apply_update(record(status="replicating", attempt=1), update(
        "completed", attempt=1, destination_backup_id="rb", source_manifest_digest=DIGEST,
        replica_manifest_digest=bytes(32)), NOW)
    assert (r.status, r.error_code, r.destination_backup_id) == ("failed", "ReplicationService.6956", "")
    missing = rules.apply_update(record(status="replicating"), update("completed"), NOW)
    assert missing.status == "failed"


def test_failed_and_cancelled_end_the_record():
    r = rules.apply_update(record(), update("failed", attempt=3, error_code="BackupService.2100",
                                            error_message="boom"), NOW)
    assert (r.status, r.error_code, r.error_message, r.attempt, r.ended_time) == \
        ("failed", "BackupService.2100", "boom", 3, NOW)
    r = rules.apply_update(record(status="replicating"), update("cancelled"), NOW)
    assert (r.status, r.error_message) == ("cancelled", "cancelled")


@pytest.mark.parametrize("final", ["success", "failed", "cancelled", "skipped"])
@pytest.mark.parametrize("state", ["started", "progress", "retrying", "completed", "failed", "cancelled"])
def test_a_final_record_never_moves_back(final, state):
    assert rules.apply_update(record(status=final, task_id="t1"), update(state, attempt=5), NOW) is None


def test_created_after_the_end_still_names_the_task():
    r = rules.apply_update(record(status="failed"), update("created"), NOW)
    assert (r.status, r.task_id) == ("failed", "t1")
    assert rules.apply_update(r, update("created"), NOW) is None  # nothing new


def test_an_older_attempts_update_and_another_projects_are_ignored():
    r = record(status="replicating", attempt=2)
    assert rules.apply_update(r, update("progress", attempt=1, progress=90), NOW) is None
    assert rules.apply_update(r, update("started", attempt=1), NOW) is None
    other = dataclasses.replace(update("completed", attempt=2), project_id="q")
    assert rules.apply_update(r, other, NOW) is None
    assert rules.apply_update(r, update("exploded", attempt=2), NOW) is None


def test_progress_before_started_still_means_replicating():
    r = rules.apply_update(record(), update("progress", attempt=1, progress=150), NOW)
    assert (r.status, r.progress, r.attempt) == ("replicating", 100, 1)


@pytest.mark.parametrize("value", [0.0, 0.5, 4.0, rules.MAX_RATE_LIMIT_MBPS])
def test_a_rate_limit_is_zero_or_a_positive_pace(value):
    assert rules.check_rate_limit(value) == value


@pytest.mark.parametrize("value", [-0.5, -4.0, float("nan"), float("inf"), rules.MAX_RATE_LIMIT_MBPS * 2])
def test_a_bad_rate_limit_is_malformed(value):
    with pytest.raises(errors.MalformedRequestError) as caught:
        rules.check_rate_limit(value)
    assert caught.value.cbr_code == "ReplicationService.6911"
