"""ReplicationService on a real source region: every refusal with its code and nothing written, request ids and
concurrent calls giving one record, records following the task updates the backup service publishes, checkpoints,
policy ticks, and listing within a project. The destination is a stand-in answering CheckDestination only."""
from __future__ import annotations

import asyncio
import uuid

import grpc

from cbr.events.v1 import policy_events_pb2 as policy_ev
from cbr.events.v1 import replication_events_pb2 as ev
from cbr.policy.v1 import policy_pb2 as pp
from cbr.replication.v1 import replication_pb2 as rp
from cbr_common.db import utcnow
from tests.integration.replication.conftest import REGION_A, REGION_B, REGION_DOWN, REGION_REFUSING
from tests.support.backups import backup_now
from tests.support.calls import expect_error
from tests.support.services import eventually
from tests.support.workers import without_shared_workers

WAITING, REPLICATING, SUCCESS = rp.REPLICATION_STATUS_WAITING, rp.REPLICATION_STATUS_REPLICATING, \
    rp.REPLICATION_STATUS_SUCCESS
FAILED, CANCELLED = rp.REPLICATION_STATUS_FAILED, rp.REPLICATION_STATUS_CANCELLED
DIGEST = bytes(range(32))
INVALID, NOT_FOUND, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, \
    grpc.StatusCode.FAILED_PRECONDITION


def code(n: int) -> str:
    return f"ReplicationService.{n}"


def request(backup_id: str, vault_id: str | None = None, **fields) -> rp.ReplicateBackupRequest:
    fields.setdefault("destination_region", REGION_B)
    fields.setdefault("destination_project_id", "project-b")
    return rp.ReplicateBackupRequest(backup_id=backup_id, destination_vault_id=vault_id or str(uuid.uuid4()),
                                     **fields)


async def record_of(caller, record_id: str) -> rp.ReplicationRecord:
    return (await caller.replication.GetReplicationRecord(
        rp.GetReplicationRecordRequest(replication_record_id=record_id))).replication_record


async def records(caller, **filters) -> rp.ListReplicationRecordsResponse:
    return await caller.replication.ListReplicationRecords(rp.ListReplicationRecordsRequest(**filters))


async def set_backup(region, backup_id: str, **columns) -> None:
    """Puts the source backup in a state the backup service would report (the replication service only reads
    it through BackupService.GetBackup)."""
    assignments = ", ".join(f"{name} = %s" for name in columns)
    await region.rows(f"UPDATE backup.backups SET {assignments} WHERE backup_id = %s RETURNING backup_id",
                      *columns.values(), backup_id)


async def test_each_refusal_has_its_code_and_writes_nothing(source_region, source):
    caller, backup_id = source.caller, source.backup.backup_id
    refused_vault, unfit_vault, full_vault = (str(uuid.uuid4()) for _ in range(3))
    source_region.destination.refusals.update({
        refused_vault: (NOT_FOUND, "vault not found in project-b"),
        unfit_vault: (PRECONDITION, "not a replication vault"),
        full_vault: (grpc.StatusCode.RESOURCE_EXHAUSTED, "no room")})
    cases = [
        (request("not-a-uuid"), INVALID, 6911),
        (request(backup_id, "not-a-uuid"), INVALID, 6911),
        (request(backup_id, destination_project_id=""), INVALID, 6911),
        (request(backup_id, name="n" * 65), INVALID, 6911),
        (request(backup_id, description="<script>"), INVALID, 6911),
        (request(backup_id, request_id="no spaces allowed"), INVALID, 6911),
        (request(backup_id, destination_region=REGION_A), INVALID, 6902),
        (request(backup_id, destination_region="region-z"), INVALID, 6901),
        (request(str(uuid.uuid4())), NOT_FOUND, 6903),
        (request(backup_id, refused_vault), NOT_FOUND, 6907),
        (request(backup_id, unfit_vault), PRECONDITION, 6908),
        (request(backup_id, full_vault), grpc.StatusCode.RESOURCE_EXHAUSTED, 6909),
        (request(backup_id, destination_region=REGION_DOWN), grpc.StatusCode.UNAVAILABLE, 6920),
        (request(backup_id, destination_region=REGION_REFUSING), grpc.StatusCode.PERMISSION_DENIED, 6921),
    ]
    for req, status, number in cases:
        await expect_error(caller.replication.ReplicateBackup(req), status, code(number))
    # Another project's backup is not found either.
    await expect_error(source_region.caller().replication.ReplicateBackup(request(backup_id)), NOT_FOUND, code(6903))
    for columns, number in (({"status": "protecting"}, 6904), ({"image_type": "replication"}, 6905),
                            ({"corrupt": True}, 6906)):
        await set_backup(source_region, backup_id, **columns)
        try:
            await expect_error(caller.replication.ReplicateBackup(request(backup_id)), PRECONDITION, code(number))
        finally:
            await set_backup(source_region, backup_id, status="available", image_type="backup", corrupt=False)
    for req, number in ((rp.ReplicateCheckpointRequest(vault_id="x"), 6911),
                        (rp.ReplicateCheckpointRequest(vault_id=source.vault_id, destination_region="region-z",
                                                       destination_project_id="p",
                                                       destination_vault_id=str(uuid.uuid4())), 6901),
                        (rp.ReplicateCheckpointRequest(vault_id=source.vault_id, destination_region=REGION_B,
                                                       destination_project_id="p", destination_vault_id=refused_vault,
                                                       request_id="refused-checkpoint"), 6907)):
        await expect_error(caller.replication.ReplicateCheckpoint(req), _status(number), code(number))
    for paging in ({"limit": 1001}, {"offset": -1}):
        await expect_error(records(caller, page=paging), INVALID, code(6911))
    await expect_error(records(caller, source_backup_id="x"), INVALID, code(6911))
    await expect_error(record_of(caller, "x"), INVALID, code(6911))
    await expect_error(record_of(caller, str(uuid.uuid4())), NOT_FOUND, code(6910))

    assert (await records(caller)).count == 0
    assert await source_region.rows("SELECT 1 FROM replication.records WHERE project_id = %s "
                                    "UNION ALL SELECT 1 FROM replication.checkpoint_requests WHERE project_id = %s",
                                    caller.project_id, caller.project_id) == []


def _status(number: int) -> grpc.StatusCode:
    return {6911: INVALID, 6901: INVALID, 6907: NOT_FOUND}[number]


async def test_a_request_makes_one_waiting_record_and_its_event(source_region, source):
    caller, backup = source.caller, source.backup
    vault_id = str(uuid.uuid4())
    reply = await caller.replication.ReplicateBackup(request(backup.backup_id, vault_id, description="copy"))
    assert reply.status == WAITING and reply.replication_record_id and not reply.task_id
    record = await record_of(caller, reply.replication_record_id)
    assert (record.project_id, record.source_region, record.source_vault_id, record.source_backup_id) == \
        (caller.project_id, REGION_A, source.vault_id, backup.backup_id)
    assert (record.destination_region, record.destination_project_id, record.destination_vault_id) == \
        (REGION_B, "project-b", vault_id)
    assert (record.name, record.description, record.resource_id, record.resource_type) == \
        (backup.name, "copy", backup.resource_id, backup.resource_type)
    assert record.status == WAITING and not record.auto_trigger and record.HasField("created_time")
    check = source_region.destination.calls[-1]
    assert (check.source_region, check.destination_project_id, check.destination_vault_id,
            check.resource_type) == (REGION_A, "project-b", vault_id, backup.resource_type)
    [event] = [e for e in await source_region.published("cbr.replication.requested", ev.ReplicationRequested)
               if e.replication_record_id == record.replication_record_id]
    assert (event.project_id, event.source_backup_id, event.destination_vault_id, event.name, event.auto_trigger) \
        == (caller.project_id, backup.backup_id, vault_id, backup.name, False)
    assert not event.HasField("retention")
    # Asked again (no request id): the replication under way answers, without a second record.
    again = await caller.replication.ReplicateBackup(request(backup.backup_id, vault_id))
    assert again.replication_record_id == record.replication_record_id
    assert (await records(caller, destination_vault_id=vault_id)).count == 1


async def test_request_ids_and_concurrent_calls_give_one_record(source_region, source):
    caller, backup_id = source.caller, source.backup.backup_id
    vault_id, request_id = str(uuid.uuid4()), f"rid-{uuid.uuid4().hex}"
    replies = await asyncio.gather(*(caller.replication.ReplicateBackup(
        request(backup_id, vault_id, request_id=request_id)) for _ in range(10)))
    assert len({r.replication_record_id for r in replies}) == 1
    assert (await records(caller, destination_vault_id=vault_id)).count == 1
    record = await record_of(caller, replies[0].replication_record_id)
    assert record.request_id == request_id
    # The same id with other arguments is refused; with the same ones it answers the record.
    for other in (request(backup_id, str(uuid.uuid4()), request_id=request_id),
                  request(backup_id, vault_id, request_id=request_id, name="other-name")):
        await expect_error(caller.replication.ReplicateBackup(other), grpc.StatusCode.ALREADY_EXISTS, code(6912))
    await expect_error(caller.replication.ReplicateCheckpoint(rp.ReplicateCheckpointRequest(
        vault_id=source.vault_id, destination_region=REGION_B, destination_project_id="project-b",
        destination_vault_id=vault_id, request_id=request_id)), grpc.StatusCode.ALREADY_EXISTS, code(6912))
    same = await caller.replication.ReplicateBackup(request(backup_id, vault_id, request_id=request_id))
    assert same.replication_record_id == record.replication_record_id

    # Ten concurrent calls without a request id for another vault: one record as well.
    vault_id = str(uuid.uuid4())
    replies = await asyncio.gather(*(caller.replication.ReplicateBackup(request(backup_id, vault_id))
                                     for _ in range(10)))
    assert len({r.replication_record_id for r in replies}) == 1
    assert (await records(caller, destination_vault_id=vault_id)).count == 1


async def test_records_follow_the_task_to_their_end_once(source_region, source):
    # No worker runs the replication tasks the backup service makes: the test plays their updates.
    async with without_shared_workers(source_region.services):
        await _records_follow_the_task_to_their_end_once(source_region, source)


async def _records_follow_the_task_to_their_end_once(source_region, source):
    caller, backup_id = source.caller, source.backup.backup_id
    ok, bad, cancelled = (await asyncio.gather(*(caller.replication.ReplicateBackup(request(backup_id))
                                                 for _ in range(3))))
    ok, bad, cancelled = [await record_of(caller, r.replication_record_id) for r in (ok, bad, cancelled)]

    async def task_made():  # the backup service's task (its `created` update)
        return (await record_of(caller, ok.replication_record_id)).task_id or None
    task_id = await eventually(task_made)
    counters = rp.ReplicationCounters(chunk_bytes_sent=1000, present_bytes=500, resent_bytes=24, metadata_bytes=77,
                                      chunks_sent=3, chunks_present=2)
    await source_region.task_update(ok, "progress", task_id=task_id, attempt=1, progress=40, bytes_done=600,
                                    bytes_total=1500, counters=counters)
    await source_region.task_update(ok, "started", task_id=task_id, attempt=1)

    async def progressed():
        r = await record_of(caller, ok.replication_record_id)
        return r if (r.status, r.task_id, r.progress) == (REPLICATING, task_id, 40) else None
    r = await eventually(progressed)
    assert (r.bytes_done, r.bytes_total, r.transferred_bytes, r.counters) == (600, 1500, 1024, counters)
    # An attempt that failed, with another to come: the record waits, showing why; no end is announced.
    await source_region.task_update(bad, "started", attempt=1)
    await source_region.task_update(bad, "retrying", attempt=1, error_code=code(6920), error_message="no answer")

    async def waiting_again():
        r = await record_of(caller, bad.replication_record_id)
        return r if (r.status, r.error.code) == (WAITING, code(6920)) else None
    await eventually(waiting_again)
    destination_backup = str(uuid.uuid4())
    await source_region.task_update(ok, "completed", task_id=task_id, attempt=1, bytes_total=1500,
                                    counters=counters, destination_backup_id=destination_backup,
                                    source_manifest_digest=DIGEST, replica_manifest_digest=DIGEST)
    await source_region.task_update(bad, "completed", attempt=1, destination_backup_id=str(uuid.uuid4()),
                                    source_manifest_digest=DIGEST, replica_manifest_digest=bytes(32))
    await source_region.task_update(cancelled, "cancelled", attempt=1, error_message="cancelled by the user")

    async def ended(record_id, status):
        r = await record_of(caller, record_id)
        return r if r.status == status else None
    done = await eventually(lambda: ended(ok.replication_record_id, SUCCESS))
    assert (done.destination_backup_id, done.progress, done.source_manifest_digest,
            done.replica_manifest_digest) == (destination_backup, 100, DIGEST, DIGEST)
    assert done.HasField("ended_time") and done.HasField("started_time")
    refused = await eventually(lambda: ended(bad.replication_record_id, FAILED))
    assert refused.error.code == code(6956) and not refused.destination_backup_id
    stopped = await eventually(lambda: ended(cancelled.replication_record_id, CANCELLED))
    assert stopped.error.message == "cancelled by the user"

    # A final record never moves back; its end was announced once.
    await source_region.task_update(ok, "failed", task_id=task_id, attempt=2, error_code="BackupService.9999")
    await source_region.task_update(ok, "progress", task_id=task_id, attempt=2, progress=5)
    marker = await caller.replication.ReplicateBackup(request(backup_id))  # later than those updates' handling
    await source_region.task_update(await record_of(caller, marker.replication_record_id), "started", attempt=1)
    await eventually(lambda: ended(marker.replication_record_id, REPLICATING))
    assert (await record_of(caller, ok.replication_record_id)) == done
    completed = [e for e in await source_region.published("cbr.replication.completed", ev.ReplicationCompleted)
                 if e.replication_record_id == ok.replication_record_id]
    assert [(e.destination_backup_id, e.transferred_bytes) for e in completed] == [(destination_backup, 1024)]
    failed = [e for e in await source_region.published("cbr.replication.failed", ev.ReplicationFailed)
              if e.replication_record_id in (bad.replication_record_id, cancelled.replication_record_id)]
    assert sorted(e.replication_record_id for e in failed) == sorted([bad.replication_record_id,
                                                                      cancelled.replication_record_id])

    # The replica answers a new request for that vault; a failed record does not, so a new one is made.
    assert (await caller.replication.ReplicateBackup(request(backup_id, ok.destination_vault_id))
            ).replication_record_id == ok.replication_record_id
    retry = await caller.replication.ReplicateBackup(request(backup_id, bad.destination_vault_id))
    assert retry.replication_record_id != bad.replication_record_id and retry.status == WAITING


async def test_checkpoint_replicates_what_has_no_replica_there(source_region):
    caller = source_region.caller()
    from tests.support.backups import disk_in_vault
    _, vault = await disk_in_vault(caller, seed=13)
    first = await backup_now(caller, vault.vault_id)
    second = await backup_now(caller, vault.vault_id)
    # No worker runs the replication tasks the backup service makes: the test plays their updates.
    async with without_shared_workers(source_region.services):
        await _checkpoint_replicates_what_has_no_replica_there(source_region, caller, vault, first, second)


async def _checkpoint_replicates_what_has_no_replica_there(source_region, caller, vault, first, second):
    vault_id = str(uuid.uuid4())
    ask = rp.ReplicateCheckpointRequest(vault_id=vault.vault_id, destination_region=REGION_B,
                                        destination_project_id="project-b", destination_vault_id=vault_id,
                                        request_id="checkpoint-1")
    made = (await caller.replication.ReplicateCheckpoint(ask)).backups
    assert [b.backup_id for b in made] == [first.backup_id, second.backup_id]
    assert (await caller.replication.ReplicateCheckpoint(ask)).backups == made  # the same request id: same answer
    changed = rp.ReplicateCheckpointRequest()
    changed.CopyFrom(ask)
    changed.destination_project_id = "project-c"
    await expect_error(caller.replication.ReplicateCheckpoint(changed), grpc.StatusCode.ALREADY_EXISTS, code(6912))
    ask.request_id = ""
    assert not (await caller.replication.ReplicateCheckpoint(ask)).backups  # both under way already

    record = await record_of(caller, made[0].replication_record_id)
    await source_region.task_update(record, "failed", attempt=3, error_code="BackupService.2100",
                                    error_message="peer went away")
    await eventually(lambda: _status_is(caller, record.replication_record_id, FAILED))
    again = (await caller.replication.ReplicateCheckpoint(ask)).backups
    assert [b.backup_id for b in again] == [first.backup_id]  # only the one whose last replication failed
    listed = await records(caller, source_vault_id=vault.vault_id)
    assert listed.count == 3
    assert (await records(caller, source_backup_id=first.backup_id, status=FAILED)).count == 1
    page = await records(caller, source_vault_id=vault.vault_id, page={"limit": 2, "offset": 2})
    assert page.count == 3 and len(page.replication_records) == 1
    # Another project sees none of them.
    stranger = source_region.caller()
    assert (await records(stranger)).count == 0
    await expect_error(record_of(stranger, record.replication_record_id), NOT_FOUND, code(6910))


async def _status_is(caller, record_id: str, status) -> bool:
    return (await record_of(caller, record_id)).status == status


async def test_a_policy_tick_replicates_with_the_policys_retention_once(source_region):
    caller = source_region.caller()
    from tests.support.backups import disk_in_vault
    _, vault = await disk_in_vault(caller, seed=14)
    backup = await backup_now(caller, vault.vault_id)
    policy = (await caller.policies.CreatePolicy(pp.CreatePolicyRequest(
        name="to-b", operation_type=pp.OPERATION_TYPE_REPLICATION,
        trigger=pp.PolicyTrigger(patterns=["FREQ=DAILY;BYHOUR=3;BYMINUTE=0"]),
        operation_definition=pp.OperationDefinition(max_backups=4, destination_region=REGION_B,
                                                    destination_project_id="project-b")))).policy
    destination_vault, tick_id = str(uuid.uuid4()), str(uuid.uuid4())

    def tick(operation_type: str = "replication") -> policy_ev.PolicyTriggered:
        event = policy_ev.PolicyTriggered(
            event_id=str(uuid.uuid4()), project_id=caller.project_id, policy_id=policy.policy_id,
            vault_id=vault.vault_id, tick_id=tick_id, operation_type=operation_type, destination_region=REGION_B,
            destination_project_id="project-b", destination_vault_id=destination_vault)
        event.occurred_time.FromDatetime(utcnow())
        return event

    await source_region.publish(tick("backup"), "cbr.policy.triggered")  # the backup service's, not ours
    await source_region.publish(tick(), "cbr.policy.triggered")
    await source_region.publish(tick(), "cbr.policy.triggered")  # the same tick again (a retried scheduler)
    listed = await eventually(lambda: _listed(caller, vault.vault_id))
    [record] = listed.replication_records
    assert (record.source_backup_id, record.auto_trigger, record.policy_id, record.destination_vault_id) == \
        (backup.backup_id, True, policy.policy_id, destination_vault)
    [event] = [e for e in await source_region.published("cbr.replication.requested", ev.ReplicationRequested)
               if e.replication_record_id == record.replication_record_id]
    assert event.auto_trigger and event.retention.policy_id == policy.policy_id
    assert event.retention.HasField("max_backups") and event.retention.max_backups == 4
    assert not event.retention.HasField("retention_duration_days")
    # Every tick event was handled by now (they are one subject, in order); still one record.
    marker = tick()
    marker.tick_id = str(uuid.uuid4())
    marker.destination_vault_id = str(uuid.uuid4())
    await source_region.publish(marker, "cbr.policy.triggered")
    await eventually(lambda: _listed(caller, vault.vault_id, 2))
    assert (await records(caller, destination_vault_id=destination_vault)).count == 1


async def _listed(caller, vault_id: str, count: int = 1):
    listed = await records(caller, source_vault_id=vault_id)
    return listed if listed.count == count else None


async def test_capabilities_answer_from_the_directory(source_region):
    reply = await source_region.caller().replication.GetReplicationCapabilities(
        rp.GetReplicationCapabilitiesRequest())
    assert [(r.name, list(r.replication_destinations)) for r in reply.regions] == [
        (REGION_A, [REGION_B, REGION_DOWN, REGION_REFUSING])]


async def test_lag_names_the_oldest_backup_without_a_replica(source_region):
    caller = source_region.caller()
    from tests.support.backups import disk_in_vault
    disk, vault = await disk_in_vault(caller, seed=15)
    first = await backup_now(caller, vault.vault_id)
    second = await backup_now(caller, vault.vault_id)
    made = await caller.replication.ReplicateBackup(request(first.backup_id))
    record = await record_of(caller, made.replication_record_id)
    await source_region.task_update(record, "completed", attempt=1, destination_backup_id=str(uuid.uuid4()),
                                    source_manifest_digest=DIGEST, replica_manifest_digest=DIGEST)
    await eventually(lambda: _status_is(caller, record.replication_record_id, SUCCESS))

    [lag] = (await caller.replication.GetReplicationLag(rp.GetReplicationLagRequest(vault_id=vault.vault_id))).lags
    assert (lag.resource_id, lag.destination_region, lag.oldest_unreplicated_backup_id, lag.unreplicated_backups,
            lag.newest_replicated_backup_id) == (disk.resource_id, REGION_B, second.backup_id, 1, first.backup_id)
    assert lag.oldest_unreplicated_time == second.created_time and lag.lag_seconds >= 0
    [elsewhere] = (await caller.replication.GetReplicationLag(rp.GetReplicationLagRequest(
        vault_id=vault.vault_id, destination_region=REGION_DOWN))).lags
    assert (elsewhere.oldest_unreplicated_backup_id, elsewhere.unreplicated_backups,
            elsewhere.newest_replicated_backup_id) == (first.backup_id, 2, "")
    for req, number in ((rp.GetReplicationLagRequest(vault_id="x"), 6911),
                        (rp.GetReplicationLagRequest(vault_id=vault.vault_id, destination_region="region-z"), 6901),
                        (rp.GetReplicationLagRequest(vault_id=vault.vault_id, destination_region=REGION_A), 6902)):
        await expect_error(caller.replication.GetReplicationLag(req), INVALID, code(number))
