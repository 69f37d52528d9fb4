"""The source side of replication through two real regions (services/backup/DESIGN.md 17.2, 17.5-17.9): region A's
backup service turns cbr.replication.requested into a replication task, and its worker sends the backup to region
B's RegionTransferService. Replications start with ReplicateBackup at A's replication service; the intake tests,
whose destinations do not exist, publish the request into A's NATS themselves. The record's side is what A says on
cbr.backup.replication_<state>."""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import grpc
import psycopg
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.events.v1 import replication_events_pb2 as rev
from cbr.replication.v1 import replication_pb2 as rpb
from cbr_backup.adapters.chunk_index import libpq_url
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath.chunk_codec import FLAG_DICT, FLAG_ENCRYPTED, NONCE_SIZE, TAG_SIZE
from cbr_backup.datapath.packs import chunk_key, pack_key
from cbr_common.outbox import MSG_ID_HEADER
from cbr_common.subjects import subject_of
from tests.support.backups import backup_now, disk_in_vault, fill, wait_success, wait_task, write_disk
from tests.support.calls import DISK, MIB, REPLICATION, create_disk, create_vault, expect_error, ref
from tests.support.calls import BACKUP as BACKUP_VAULT
from tests.support.regions import REGION_B
from tests.support.services import eventually
from tests.support.workers import without_shared_workers, worker_processes

RESEND_BOUND = 56 * MIB  # DESIGN.md 17.8: the window (48 MiB) and two read batches (4 MiB each)


class Updates:
    """What region A's backup service says about replication records (cbr.backup.replication_<state>)."""

    def __init__(self):
        self.seen: list[rev.ReplicationTaskUpdate] = []

    async def on_message(self, msg) -> None:
        if msg.subject.startswith("cbr.backup.replication_"):
            self.seen.append(rev.ReplicationTaskUpdate.FromString(msg.data))

    def of(self, record_id: str, state: str | None = None) -> list[rev.ReplicationTaskUpdate]:
        return [u for u in self.seen if u.replication_record_id == record_id and (state is None or u.state == state)]

    async def wait(self, record_id: str, state: str, timeout: float = 120.0) -> rev.ReplicationTaskUpdate:
        deadline = time.monotonic() + timeout
        while not self.of(record_id, state):
            assert time.monotonic() < deadline, f"no {state} update for {record_id}: {self.of(record_id)}"
            await asyncio.sleep(0.05)
        return self.of(record_id, state)[0]


@pytest.fixture
async def updates(two_regions):
    seen = Updates()
    sub = await two_regions.a.runtimes["backup"].nats.subscribe("cbr.backup.>", cb=seen.on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def request(region, caller, backup: bp.Backup, destination_project: str, destination_vault: str,
                  record_id: str | None = None, **fields) -> str:
    """Publishes cbr.replication.requested into the region's NATS, as its replication service does."""
    record_id = record_id or str(uuid.uuid4())
    event = rev.ReplicationRequested(
        event_id=str(uuid.uuid4()), project_id=caller.project_id, replication_record_id=record_id,
        source_vault_id=backup.vault_id, source_backup_id=backup.backup_id, destination_region=REGION_B,
        destination_project_id=destination_project, destination_vault_id=destination_vault, **fields)
    event.occurred_time.GetCurrentTime()
    await region.runtimes["backup"].js.publish(subject_of(rev.ReplicationRequested), event.SerializeToString(),
                                               headers={MSG_ID_HEADER: event.event_id})
    return record_id


async def replicate(caller, backup: bp.Backup, destination_project: str, destination_vault: str, **fields) -> str:
    """ReplicateBackup through region A's replication service: its record, and the request it publishes."""
    reply = await caller.replication.ReplicateBackup(rpb.ReplicateBackupRequest(
        backup_id=backup.backup_id, destination_region=REGION_B, destination_project_id=destination_project,
        destination_vault_id=destination_vault, **fields))
    return reply.replication_record_id


async def record(caller, record_id: str) -> rpb.ReplicationRecord:
    reply = await caller.replication.GetReplicationRecord(rpb.GetReplicationRecordRequest(
        replication_record_id=record_id))
    return reply.replication_record


async def replication_vault(region_b, name: str):
    caller_b = region_b.caller()
    return caller_b, await create_vault(caller_b, name, DISK, REPLICATION)


def wire_bytes(infra, vault_id: str) -> dict[bytes, int]:
    """Every chunk of the vault, as its payload crosses between regions: the stored value less its envelope
    (DESIGN.md 2 and 17.6), read from the index and the first byte of each stored value."""
    store = FsChunkStore(str(infra.base / "store"))
    with psycopg.connect(libpq_url(infra.postgres.url)) as conn:
        rows = conn.execute("SELECT digest, raw_size, stored_size, pack_id, pack_offset FROM backup.chunks "
                            "WHERE vault_id = %s", (vault_id,)).fetchall()
    sizes = {}
    for digest, raw, stored, pack, offset in rows:
        key = pack_key(vault_id, bytes(pack)) if pack is not None else chunk_key(vault_id, bytes(digest))
        flags = store.read_ranges(key, [(offset or 0, 1)])[0][0]
        if flags & FLAG_ENCRYPTED:
            payload = stored - 1 - NONCE_SIZE - TAG_SIZE - (4 if flags & FLAG_DICT else 0)
        elif stored == raw:
            payload = stored  # bare
        else:
            payload = stored - 1 - (4 if flags & FLAG_DICT else 0)
        sizes[bytes(digest)] = payload
    return sizes


async def replicas(caller_b, vault_id: str) -> list[bp.Backup]:
    reply = await caller_b.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault_id))
    return list(reply.backups)


def counters(update: rev.ReplicationTaskUpdate) -> dict:
    c = update.counters
    return {"chunk_bytes_sent": c.chunk_bytes_sent, "present_bytes": c.present_bytes, "resent_bytes": c.resent_bytes,
            "metadata_bytes": c.metadata_bytes, "chunks_sent": c.chunks_sent, "chunks_present": c.chunks_present}


# Intake: the task, its job and the record's first word

async def test_a_request_makes_one_task_and_the_backup_is_busy_while_it_waits(two_regions, updates):
    a = two_regions.a
    caller = a.caller()
    _, vault = await disk_in_vault(caller, 8 * MIB, seed=301)
    backup = await backup_now(caller, vault.vault_id)
    async with without_shared_workers(a):  # the task waits: nobody takes its job
        record_id = await request(a, caller, backup, "project-b", str(uuid.uuid4()), name="copy-1")
        created = await updates.wait(record_id, "created")
        # The same record requested again (a new event id) makes no second task.
        await request(a, caller, backup, "project-b", str(uuid.uuid4()), record_id=record_id)
        task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=created.task_id))).task
        assert task.status == tp.TASK_STATUS_WAITING
        assert (task.operation_type, task.backup_id, task.vault_id) == (tp.OPERATION_TYPE_REPLICATION, backup.backup_id,
                                                                         backup.vault_id)
        await expect_error(caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id)),
                           grpc.StatusCode.FAILED_PRECONDITION, "BackupService.6731")
        await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=created.task_id))
        cancelled = await updates.wait(record_id, "cancelled")
        assert cancelled.task_id == created.task_id
        listed = await caller.tasks.ListTasks(tp.ListTasksRequest(operation_type=tp.OPERATION_TYPE_REPLICATION,
                                                                  vault_id=backup.vault_id))
        assert [t.task_id for t in listed.tasks] == [created.task_id]
        assert len(updates.of(record_id, "created")) == 1
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, reply.task_id)


async def test_a_backup_that_cannot_be_replicated_gets_no_task(two_regions, updates):
    a = two_regions.a
    caller = a.caller()
    _, vault = await disk_in_vault(caller, 8 * MIB, seed=302)
    backup = await backup_now(caller, vault.vault_id)
    gone = bp.Backup(backup_id=str(uuid.uuid4()), vault_id=vault.vault_id)
    record_id = await request(a, caller, gone, "project-b", str(uuid.uuid4()))
    failed = await updates.wait(record_id, "failed")
    assert (failed.error_code, failed.task_id) == ("ReplicationService.6903", "")
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, reply.task_id)
    record_id = await request(a, caller, backup, "project-b", str(uuid.uuid4()))
    failed = await updates.wait(record_id, "failed")
    assert failed.error_code in ("ReplicationService.6903", "ReplicationService.6904")
    listed = await caller.tasks.ListTasks(tp.ListTasksRequest(operation_type=tp.OPERATION_TYPE_REPLICATION, vault_id=vault.vault_id))
    assert list(listed.tasks) == []


# The whole path

async def test_replicas_send_exactly_what_the_destination_lacks(two_regions, updates):
    a, b = two_regions.a, two_regions.b
    caller = a.caller()
    disk, vault = await disk_in_vault(caller, 16 * MIB, seed=310)
    caller_b, target = await replication_vault(b, "replicas-310")

    first = await backup_now(caller, vault.vault_id)
    lacked = wire_bytes(a.infra, vault.vault_id)  # B holds nothing of this vault yet
    record_id = await replicate(caller, first, caller_b.project_id, target.vault_id, name="copy-310")
    created = await updates.wait(record_id, "created")
    await wait_success(caller, created.task_id, timeout=120)
    done = await updates.wait(record_id, "completed")
    assert len(updates.of(record_id, "started")) == 1
    assert done.source_manifest_digest and done.source_manifest_digest == done.replica_manifest_digest
    assert counters(done) | {"metadata_bytes": 0} == {
        "chunk_bytes_sent": sum(lacked.values()), "chunks_sent": len(lacked), "present_bytes": 0,
        "chunks_present": 0, "resent_bytes": 0, "metadata_bytes": 0}
    [replica] = await replicas(caller_b, target.vault_id)
    assert replica.backup_id == done.destination_backup_id
    assert (replica.status, replica.name) == (bp.BACKUP_STATUS_AVAILABLE, "copy-310")

    async def succeeded():
        r = await record(caller, record_id)
        return r if r.status == rpb.REPLICATION_STATUS_SUCCESS else None
    shown = await eventually(succeeded)
    assert (shown.task_id, shown.destination_backup_id, shown.counters) == (
        created.task_id, replica.backup_id, done.counters)
    assert shown.source_manifest_digest == shown.replica_manifest_digest == done.source_manifest_digest

    # Changed content: only the new chunks cross (the manifest as a delta against the first replica).
    write_disk(disk.path, seed=311, chunks=3)
    second = await backup_now(caller, vault.vault_id)
    now = wire_bytes(a.infra, vault.vault_id)
    new = {chunk: n for chunk, n in now.items() if chunk not in lacked}
    assert new
    record_id = await replicate(caller, second, caller_b.project_id, target.vault_id)
    await wait_success(caller, (await updates.wait(record_id, "created")).task_id, timeout=120)
    done = await updates.wait(record_id, "completed")
    assert done.source_manifest_digest == done.replica_manifest_digest
    assert (done.counters.chunk_bytes_sent, done.counters.chunks_sent) == (sum(new.values()), len(new))
    assert done.counters.resent_bytes == 0 and done.counters.chunks_present > 0

    # Unchanged content: no chunk bytes at all, and little else.
    third = await backup_now(caller, vault.vault_id)
    record_id = await replicate(caller, third, caller_b.project_id, target.vault_id)
    await wait_success(caller, (await updates.wait(record_id, "created")).task_id, timeout=120)
    done = await updates.wait(record_id, "completed")
    assert (done.counters.chunk_bytes_sent, done.counters.chunks_sent, done.counters.resent_bytes) == (0, 0, 0)
    assert 0 < done.counters.metadata_bytes < 512 * 1024
    assert len(await replicas(caller_b, target.vault_id)) == 3


async def test_a_killed_worker_resumes_the_same_transfer_within_the_bound(two_regions, updates):
    a, b = two_regions.a, two_regions.b
    caller = a.caller()
    disk = await create_disk(caller, "disk-320", 160 * MIB)
    fill(disk.path, 0, 160, seed=320)  # random: every block a chunk of its full size, 160 MiB to send
    vault = await create_vault(caller, "vault-320", DISK, BACKUP_VAULT, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    lacked = wire_bytes(a.infra, vault.vault_id)
    caller_b, target = await replication_vault(b, "replicas-320")
    async with without_shared_workers(a):
        with worker_processes(a, 1, CBR_RATE_LIMIT_MBPS=40) as [slow]:
            record_id = await replicate(caller, backup, caller_b.project_id, target.vault_id)
            task_id = (await updates.wait(record_id, "created")).task_id
            await half_way(caller, task_id)
            os.kill(slow.pid, signal.SIGKILL)
            slow.wait()
        with worker_processes(a, 1):
            task = await wait_task(caller, task_id, timeout=180)
    assert task.status == tp.TASK_STATUS_SUCCESS, task
    done = await updates.wait(record_id, "completed")
    assert done.attempt == 2 and len(updates.of(record_id, "started")) == 2
    assert done.source_manifest_digest == done.replica_manifest_digest
    # First sends are exactly the chunks B lacked; what went again is bounded by the window and one message.
    assert (done.counters.chunk_bytes_sent, done.counters.chunks_sent) == (sum(lacked.values()), len(lacked))
    assert done.counters.resent_bytes <= RESEND_BOUND
    [replica] = await replicas(caller_b, target.vault_id)
    assert replica.backup_id == done.destination_backup_id and replica.status == bp.BACKUP_STATUS_AVAILABLE


async def test_a_cancelled_replication_leaves_no_replica(two_regions, updates):
    a, b = two_regions.a, two_regions.b
    caller = a.caller()
    disk = await create_disk(caller, "disk-330", 96 * MIB)
    fill(disk.path, 0, 96, seed=330)
    vault = await create_vault(caller, "vault-330", DISK, BACKUP_VAULT, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    caller_b, target = await replication_vault(b, "replicas-330")
    async with without_shared_workers(a):
        await a.start_worker(rate_limit_mbps=16)
        record_id = await replicate(caller, backup, caller_b.project_id, target.vault_id)
        task_id = (await updates.wait(record_id, "created")).task_id
        await half_way(caller, task_id, fraction=0.1)
        await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=task_id))
        task = await wait_task(caller, task_id, timeout=60)
    assert task.status == tp.TASK_STATUS_CANCELLED
    cancelled = await updates.wait(record_id, "cancelled")
    assert not updates.of(record_id, "completed") and cancelled.task_id == task_id
    assert await replicas(caller_b, target.vault_id) == []
    # The backup is free again: it may be deleted now.
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, reply.task_id)


async def half_way(caller, task_id: str, fraction: float = 0.5, timeout: float = 120.0) -> tp.Task:
    """Waits until the running task has done about `fraction` of its bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
        assert task.status in (tp.TASK_STATUS_WAITING, tp.TASK_STATUS_RUNNING), task
        if task.status == tp.TASK_STATUS_RUNNING and task.bytes_total and \
                task.bytes_done >= fraction * task.bytes_total:
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not get {fraction:.0%} of the way")


async def test_a_server_and_a_file_system_replicate_whole(two_regions, updates):
    from cbr.backup.v1 import protectable_pb2 as pp
    from tests.integration.backup.test_file_system_backups import build_tree
    from tests.support.backups import disk_path
    from tests.support.calls import SERVER, TURBO, create_server

    a, b = two_regions.a, two_regions.b
    caller = a.caller()
    server = await create_server(caller, "srv-340")
    for i, d in enumerate(server.disks):
        write_disk(await disk_path(caller, d.disk_id), seed=340 + i, chunks=3)
    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="share-340"))).file_system
    build_tree(fs.path)
    caller_b = b.caller()
    for resource, kind in ((server, SERVER), (fs, TURBO)):
        vault = await create_vault(caller, f"vault-340-{kind}", kind, BACKUP_VAULT, resources=[ref(resource)])
        target = await create_vault(caller_b, f"replicas-340-{kind}", kind, REPLICATION)
        backup = await backup_now(caller, vault.vault_id)
        record_id = await replicate(caller, backup, caller_b.project_id, target.vault_id)
        await wait_success(caller, (await updates.wait(record_id, "created")).task_id, timeout=120)
        done = await updates.wait(record_id, "completed")
        parts = len(backup.children) or 1  # a server's digest joins its disks' (32 bytes each)
        assert len(done.source_manifest_digest) == 32 * parts
        assert done.source_manifest_digest == done.replica_manifest_digest
        assert done.counters.chunk_bytes_sent == sum(wire_bytes(a.infra, vault.vault_id).values())
        [replica] = await replicas(caller_b, target.vault_id)
        assert replica.backup_id == done.destination_backup_id and len(replica.children) == len(backup.children)


async def test_a_credential_the_peer_refuses_fails_the_task(two_regions, updates, tmp_path):
    import json

    a, b = two_regions.a, two_regions.b
    caller = a.caller()
    _, vault = await disk_in_vault(caller, 8 * MIB, seed=350)
    backup = await backup_now(caller, vault.vault_id)
    caller_b, target = await replication_vault(b, "replicas-350")
    directory = json.loads(open(a.extra["regions_file"]).read())
    (tmp_path / "forged.token").write_text("not-a-token\n")
    directory["peers"][0]["credential_file"] = str(tmp_path / "forged.token")
    (tmp_path / "regions.json").write_text(json.dumps(directory))
    async with without_shared_workers(a):
        await a.start_worker(regions_file=str(tmp_path / "regions.json"))
        record_id = await replicate(caller, backup, caller_b.project_id, target.vault_id)
        task = await wait_task(caller, (await updates.wait(record_id, "created")).task_id)
    assert (task.status, task.error.code) == (tp.TASK_STATUS_FAILED, "ReplicationService.6921")
    failed = await updates.wait(record_id, "failed")
    assert failed.error_code == "ReplicationService.6921" and failed.task_id == task.task_id
    assert await replicas(caller_b, target.vault_id) == []
