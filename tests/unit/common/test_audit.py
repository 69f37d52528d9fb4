"""The pure parts of cbr_common.audit: which calls go on the trail, which ids a call names, its request id and the
CBR code of its refusal."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.events.v1 import audit_events_pb2
from cbr.vault.v1 import vault_pb2 as vp
from cbr_common import audit, auth
from cbr_common.errors import InvalidArgumentError, UnauthenticatedError
from cbr_common.grpc_errors import status_for
from cbr_common.request_validation import UndecodableRequest


@pytest.mark.parametrize("method, audited", [
    ("/cbr.backup.v1.BackupService/DeleteBackup", True),
    ("/cbr.backup.v1.BackupService/RestoreBackup", True),
    ("/cbr.backup.v1.BackupService/CreateCheckpoint", True),
    ("/cbr.backup.v1.TaskService/CancelTask", True),
    ("/cbr.vault.v1.VaultService/CreateVault", True),
    ("/cbr.policy.v1.PolicyService/DeletePolicy", True),
    ("/cbr.replication.v1.ReplicationService/ReplicateBackup", True),
    ("/cbr.backup.v1.BackupService/GetBackup", False),
    ("/cbr.backup.v1.BackupService/ListBackups", False),
    ("/cbr.backup.v1.TaskService/WatchTask", False),
    ("/cbr.policy.v1.PolicyService/PreviewRetention", False),
    ("/cbr.vault.v1.VaultService/ListAuditEvents", False),
    ("/cbr.replication.v1.RegionTransferService/PutChunks", False),  # service only: the replication's plumbing
    ("/grpc.health.v1.Health/Check", False),
])
def test_which_calls_are_audited(method, audited):
    assert audit.is_audited(method) is audited


def test_ids_of_a_request_and_its_response():
    request = bp.RestoreBackupRequest(backup_id="b1", volume_id="d1", mappings=[
        bp.RestoreMapping(backup_id="child-1", volume_id="d2")])
    response = bp.RestoreBackupResponse(task_id="t1")
    assert audit.ids_of(request, response) == [("backup_id", "b1"), ("volume_id", "d1"), ("backup_id", "child-1"),
                                               ("volume_id", "d2"), ("task_id", "t1")]


def test_lists_are_named_in_the_singular_and_project_and_request_ids_are_not_resource_ids():
    request = bp.CreateCheckpointRequest(vault_id="v1", resource_ids=["r1", "r2"], policy_id="p1", request_id="k")
    response = bp.CreateCheckpointResponse(checkpoint=bp.Checkpoint(
        checkpoint_id="c1", project_id="proj", vault_id="v1",
        resources=[bp.CheckpointResource(resource_id="r1", backup_id="b1", task_id="t1")]))
    assert audit.ids_of(request, response) == [
        ("vault_id", "v1"), ("resource_id", "r1"), ("resource_id", "r2"), ("policy_id", "p1"),
        ("checkpoint_id", "c1"), ("backup_id", "b1"), ("task_id", "t1")]  # each pair once


def test_ids_are_bounded_and_cleaned():
    many = vp.RemoveResourcesRequest(vault_id="v", resource_ids=[f"r{i}" for i in range(500)])
    found = audit.ids_of(many)
    assert len(found) == audit.MAX_IDS and found[0] == ("vault_id", "v")
    odd = audit.ids_of(bp.DeleteBackupRequest(backup_id="a\x00b" + "x" * 500))
    assert odd == [("backup_id", "a?b" + "x" * (audit.MAX_ID_CHARS - 4) + "…")]


def test_what_is_not_a_message_has_no_ids():
    assert audit.ids_of(UndecodableRequest(ValueError("garbage")), None) == []
    assert audit.ids_of(pp.DeleteDiskResponse()) == []


def test_request_id_from_the_request_else_the_metadata():
    request = bp.CreateCheckpointRequest(vault_id="v", request_id="from-body")
    assert audit.request_id_of(request, (("x-request-id", "from-header"),)) == "from-body"
    assert audit.request_id_of(bp.CreateCheckpointRequest(), (("X-Request-Id", "from-header"),)) == "from-header"
    assert audit.request_id_of(bp.DeleteBackupRequest(), ()) == ""


def test_the_cbr_code_of_a_refusal_is_read_from_its_status_details():
    status = status_for(InvalidArgumentError("no", cbr_code="BackupService.6101"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert audit.cbr_code_of(status.trailing_metadata) == "BackupService.6101"
    assert audit.cbr_code_of(status_for(InvalidArgumentError("no")).trailing_metadata) == ""
    assert audit.cbr_code_of([(audit.DETAILS_KEY, b"\xff not a status")]) == ""
    assert audit.cbr_code_of(None) == ""


class FakeContext:
    """What the interceptor reads of a grpc.aio servicer context after the call."""

    def __init__(self, metadata=()):
        self._metadata, self._code, self._details, self._trailing = metadata, None, None, ()

    def invocation_metadata(self):
        return self._metadata

    def peer(self):
        return "ipv4:127.0.0.1:5000"

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing

    def abort_with(self, status: grpc.Status):
        self._code, self._details, self._trailing = status.code, status.details, status.trailing_metadata
        return grpc.aio.AbortError()


class FakeRecorder:
    def __init__(self):
        self.awaited, self.soon = [], []

    async def record(self, event):
        self.awaited.append(event)

    def record_soon(self, event):
        self.soon.append(event)


def wrapped(behavior, method="/cbr.backup.v1.BackupService/DeleteBackup"):
    recorder = FakeRecorder()
    return audit.AuditTrail(recorder)._wrap_unary(behavior, method, False), recorder


def as_caller(project="p1", roles=("cbr_full_access",)):
    auth.set_principal(auth.Principal(subject="alice", project_id=project, roles=frozenset(roles)))


async def test_an_answered_call_is_recorded_before_the_answer_leaves():
    async def handler(request, context):
        as_caller()
        return bp.DeleteBackupResponse(task_id="t1")
    call, recorder = wrapped(handler)
    reply = await call(bp.DeleteBackupRequest(backup_id="b1"), FakeContext((("x-request-id", "r-9"),)))
    assert reply.task_id == "t1"
    [event] = recorder.awaited
    assert (event.subject, event.project_id, list(event.roles)) == ("alice", "p1", ["cbr_full_access"])
    assert (event.service, event.method, event.code, event.request_id) == (
        "cbr.backup.v1.BackupService", "DeleteBackup", "OK", "r-9")
    assert [(i.name, i.value) for i in event.ids] == [("backup_id", "b1"), ("task_id", "t1")]
    assert event.HasField("call_time") and event.peer == "ipv4:127.0.0.1:5000"


async def test_a_refusal_is_recorded_with_its_code_message_and_cbr_code():
    context = FakeContext()

    async def handler(request, context):
        as_caller()
        raise context.abort_with(status_for(InvalidArgumentError("backup_id must be a UUID", "BackupService.6504")))
    call, recorder = wrapped(handler)
    with pytest.raises(grpc.aio.AbortError):
        await call(bp.DeleteBackupRequest(backup_id="x"), context)
    [event] = recorder.awaited
    assert (event.code, event.message, event.cbr_code) == ("INVALID_ARGUMENT", "backup_id must be a UUID",
                                                           "BackupService.6504")


async def test_a_call_without_a_caller_is_not_recorded():
    context = FakeContext()

    async def handler(request, context):  # the guard refused the token: no principal was set
        raise context.abort_with(status_for(UnauthenticatedError("no")))
    as_caller()  # one left over from elsewhere in this context is not taken for the caller
    call, recorder = wrapped(handler)
    with pytest.raises(grpc.aio.AbortError):
        await call(bp.DeleteBackupRequest(backup_id="b1"), context)
    assert recorder.awaited == [] and recorder.soon == []


async def test_a_cancelled_call_is_recorded_without_waiting():
    async def handler(request, context):
        as_caller()
        raise asyncio.CancelledError()
    call, recorder = wrapped(handler)
    with pytest.raises(asyncio.CancelledError):
        await call(bp.DeleteBackupRequest(backup_id="b1"), FakeContext())
    [event] = recorder.soon
    assert recorder.awaited == [] and event.code == "CANCELLED" and event.message == audit.CANCELLED_MESSAGE


class FlakyDb:
    """A Database stand-in whose first `failures` transactions fail, as in an outage; it keeps what it was sent."""

    schema = "vault"

    def __init__(self, failures: int):
        self.failures, self.rows, self.wakes = failures, [], 0
        self.on_commit_with_events = [self.wake]

    def wake(self):
        self.wakes += 1

    def sessions(self):
        db = self

        class Session:
            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return False

            def begin(self):
                return self

            async def execute(self, statement):
                if db.failures:
                    db.failures -= 1
                    raise ConnectionError("database down")
                db.rows.append(statement.compile().params)
        return Session()


async def test_a_write_the_database_refused_is_retried_with_the_same_event_id(monkeypatch):
    monkeypatch.setattr(audit, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    db = FlakyDb(failures=2)
    recorder = audit.AuditRecorder(db)
    event = audit_events_pb2.AuditRecorded(method="DeleteBackup")
    await recorder.record(event)  # returns after the first failure
    assert db.rows == []
    for _ in range(100):
        if db.rows:
            break
        await asyncio.sleep(0.01)
    [row] = db.rows
    assert row["subject"] == "cbr.audit.recorded" and row["event_id"] == event.event_id and db.wakes == 1
    assert audit_events_pb2.AuditRecorded.FromString(row["payload"]).method == "DeleteBackup"


async def test_a_record_the_database_never_takes_is_logged_whole(monkeypatch, caplog):
    monkeypatch.setattr(audit, "RETRY_DELAYS", (0.01,))
    db = FlakyDb(failures=5)
    await audit.AuditRecorder(db).record(audit_events_pb2.AuditRecorded(method="DeleteVault", project_id="p9"))
    for _ in range(100):
        if any("audit record lost" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    [lost] = [r for r in caplog.records if "audit record lost" in r.getMessage()]
    assert '"method": "DeleteVault"' in lost.fields["record"] and '"project_id": "p9"' in lost.fields["record"]
    assert db.rows == []
