"""The audit trail through the public API: state-changing calls of every service, with who made them, which ids
they named and how they ended, listed by VaultService.ListAuditEvents within what the caller may see."""
from __future__ import annotations

import datetime as dt
import uuid

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cbr.backup.v1 import backup_pb2 as bp
from cbr.common.v1 import common_pb2 as cp
from cbr.events.v1 import audit_events_pb2
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.backups import backup_now, disk_in_vault, get_backup, wait_success
from tests.support.calls import create_vault, expect_error
from tests.support.services import eventually

BACKUP_SERVICE = "cbr.backup.v1.BackupService"


async def trail(caller, **filters) -> vp.ListAuditEventsResponse:
    return await caller.vault.ListAuditEvents(vp.ListAuditEventsRequest(**filters))


async def trail_of(caller, count: int, **filters) -> list[vp.AuditEvent]:
    """The caller's events once `count` of them match (they arrive through the event stream)."""
    async def check():
        reply = await trail(caller, **filters)
        assert reply.count == count, (reply.count, [e.method for e in reply.events])
        return list(reply.events)
    return await eventually(check)


def ids(event: vp.AuditEvent) -> set[tuple[str, str]]:
    return {(i.name, i.value) for i in event.ids}


def stamp(when: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when)
    return result


async def test_deleting_and_restoring_a_backup_are_recorded_with_the_callers_identity(services, caller):
    disk, vault = await disk_in_vault(caller)
    backup = await backup_now(caller, vault.vault_id)
    restore = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, restore.task_id)
    await get_backup(caller, backup.backup_id)  # reads are not recorded
    delete = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, delete.task_id)

    # Newest first; the checkpoint's answer named the backup it started.
    deleted, restored, started = await trail_of(caller, 3, resource_id=backup.backup_id)
    assert started.method == "CreateCheckpoint"
    for event, method, task_id in ((deleted, "DeleteBackup", delete.task_id),
                                   (restored, "RestoreBackup", restore.task_id)):
        assert (event.method, event.service, event.code, event.message) == (method, BACKUP_SERVICE, "OK", "")
        assert (event.project_id, event.subject, list(event.roles)) == (caller.project_id, "tester",
                                                                          ["cbr_full_access"])
        assert {("backup_id", backup.backup_id), ("task_id", task_id)} <= ids(event)
        assert event.peer.startswith("ipv4:127.0.0.1:") and event.duration_ms >= 0
    assert deleted.time.ToDatetime() >= restored.time.ToDatetime()

    # Every call the test made that changed something, and nothing it only read.
    everything = await trail_of(caller, 5)
    assert sorted(e.method for e in everything) == ["CreateCheckpoint", "CreateDisk", "CreateVault", "DeleteBackup",
                                                    "RestoreBackup"]
    created = next(e for e in everything if e.method == "CreateVault")
    assert {("vault_id", vault.vault_id), ("resource_id", disk.resource_id)} <= ids(created)
    checkpoint = next(e for e in everything if e.method == "CreateCheckpoint")
    assert {("vault_id", vault.vault_id), ("backup_id", backup.backup_id),
            ("checkpoint_id", backup.checkpoint_id)} <= ids(checkpoint)

    only_deletes = await trail(caller, method=f"{BACKUP_SERVICE}/DeleteBackup")
    assert [e.event_id for e in only_deletes.events] == [deleted.event_id]
    page = await trail(caller, page=cp.PageRequest(limit=2, offset=1))
    assert page.count == 5 and [e.event_id for e in page.events] == [e.event_id for e in everything[1:3]]
    later = await trail(caller, since=deleted.time)
    assert [e.event_id for e in later.events] == [deleted.event_id]
    earlier = await trail(caller, until=deleted.time)
    assert deleted.event_id not in {e.event_id for e in earlier.events} and earlier.count == 4


async def test_the_record_is_written_before_the_caller_gets_its_answer(services, caller, infra):
    vault = await create_vault(caller, "answered")
    reply = await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))
    # No waiting: the vault service's outbox holds the record already.
    async with await psycopg.AsyncConnection.connect(infra.postgres.conninfo()) as conn:
        rows = await (await conn.execute("SELECT payload FROM vault.outbox WHERE subject = 'cbr.audit.recorded'")
                      ).fetchall()
    records = [audit_events_pb2.AuditRecorded.FromString(row[0]) for row in rows]
    mine = [r for r in records if r.project_id == caller.project_id and r.method == "DeleteVault"]
    assert len(mine) == 1
    assert {(i.name, i.value) for i in mine[0].ids} >= {("vault_id", vault.vault_id), ("task_id", reply.task_id)}


async def test_refused_calls_are_recorded_with_their_code(services, caller):
    await expect_error(caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id="not-a-uuid")),
                       grpc.StatusCode.INVALID_ARGUMENT)
    await expect_error(create_vault(caller, "too-small", size_gb=0), grpc.StatusCode.INVALID_ARGUMENT,
                       "BackupService.6101")
    reader = services.caller(caller.project_id, roles=("cbr_readonly",))
    missing = str(uuid.uuid4())
    await expect_error(reader.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=missing)),
                       grpc.StatusCode.PERMISSION_DENIED)
    # A body the guard refuses before any handler runs (a control character in a string) is recorded too.
    await expect_error(create_vault(caller, "bad\x01name"), grpc.StatusCode.INVALID_ARGUMENT, "BackupService.6400")
    # No valid token: no one to file the call under, so it is not recorded (UNAUTHENTICATED as before).
    anonymous = services.caller(caller.project_id, token="")
    await expect_error(create_vault(anonymous, "anonymous"), grpc.StatusCode.UNAUTHENTICATED)

    refused = await trail_of(caller, 4, outcome="error")
    by_method = {}
    for event in refused:
        by_method.setdefault(event.method, []).append(event)
    [bad_id] = by_method["DeleteBackup"]
    assert (bad_id.code, bad_id.subject) == ("INVALID_ARGUMENT", "tester")
    assert "backup_id" in bad_id.message and ("backup_id", "not-a-uuid") in ids(bad_id)
    assert sorted((e.code, e.cbr_code) for e in by_method["CreateVault"]) == [
        ("INVALID_ARGUMENT", "BackupService.6101"), ("INVALID_ARGUMENT", "BackupService.6400")]
    [denied] = by_method["DeleteVault"]
    assert (denied.code, list(denied.roles), denied.project_id) == ("PERMISSION_DENIED", ["cbr_readonly"],
                                                                   caller.project_id)
    assert ("vault_id", missing) in ids(denied)

    assert (await trail(caller, outcome="invalid_argument")).count == 3
    assert (await trail(caller, outcome="ok")).count == 0
    assert [e.event_id for e in (await trail(caller, resource_id="not-a-uuid")).events] == [bad_id.event_id]


async def test_a_project_sees_only_its_own_trail_and_an_auditor_sees_every_project(services, caller):
    vault = await create_vault(caller, "mine")
    await trail_of(caller, 1)
    stranger = services.caller()
    await expect_error(trail(stranger, project_id=caller.project_id), grpc.StatusCode.PERMISSION_DENIED,
                       "BackupService.6416")
    assert (await trail(stranger)).count == 0
    assert (await trail(stranger, resource_id=vault.vault_id)).count == 0

    reader = services.caller(caller.project_id, roles=("cbr_readonly",))
    [seen] = (await trail(reader)).events
    assert (seen.method, seen.project_id) == ("CreateVault", caller.project_id)

    auditor = services.caller("operators", roles=("cbr_auditor",))
    [audited] = (await trail(auditor, project_id=caller.project_id)).events
    assert audited.event_id == seen.event_id
    everywhere = await trail(auditor, resource_id=vault.vault_id)
    assert [e.event_id for e in everywhere.events] == [seen.event_id]
    assert (await trail(auditor)).count > 1  # other tests' projects too
    # The auditor reads; it changes nothing (and its refused attempt is on its own project's trail).
    await expect_error(create_vault(auditor, "nope"), grpc.StatusCode.PERMISSION_DENIED)


@pytest.mark.parametrize("filters, words", [
    ({"outcome": "bogus"}, "outcome must be"),
    ({"method": "delete backup"}, "method must be"),
    ({"since": stamp(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
      "until": stamp(dt.datetime(2029, 1, 1, tzinfo=dt.timezone.utc))}, "since must be before until"),
    ({"page": cp.PageRequest(limit=1001)}, "limit"),
])
async def test_bad_filters_are_refused(caller, filters, words):
    error = await expect_error(trail(caller, **filters), grpc.StatusCode.INVALID_ARGUMENT)
    assert words in error.details()
