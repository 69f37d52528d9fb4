"""Replication end to end through the public APIs of two real regions (issue 12, "done means"): region A's
ReplicationService.ReplicateBackup, A's backup service and worker, B's RegionTransferService; then in B, as any
user of B would: the replica listed with its provenance, restored in place, to a new disk and as a tree, verified."""
from __future__ import annotations

import asyncio
import os
import time

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.replication.v1 import replication_pb2 as rp
from tests.integration.backup.test_file_system_backups import build_tree, describe
from tests.support.backups import (backup_now, checkpoint, disk_path, fill, get_backup, new_disk_from, sha256_file,
                                   wait_success, write_disk)
from tests.support.calls import (BACKUP, DISK, MIB, REPLICATION, SERVER, TURBO, create_disk, create_server,
                                 create_vault, ref)
from tests.support.regions import REGION_A, REGION_B

KIB = 1024
FINAL = (rp.REPLICATION_STATUS_SUCCESS, rp.REPLICATION_STATUS_FAILED, rp.REPLICATION_STATUS_CANCELLED,
         rp.REPLICATION_STATUS_SKIPPED)


async def replicate(caller, backup_id: str, caller_b, vault_b: str, **fields) -> rp.ReplicateBackupResponse:
    return await caller.replication.ReplicateBackup(rp.ReplicateBackupRequest(
        backup_id=backup_id, destination_region=REGION_B, destination_project_id=caller_b.project_id,
        destination_vault_id=vault_b, **fields))


async def finished(caller, record_id: str, timeout: float = 180.0) -> rp.ReplicationRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = (await caller.replication.GetReplicationRecord(
            rp.GetReplicationRecordRequest(replication_record_id=record_id))).replication_record
        if record.status in FINAL:
            return record
        assert time.monotonic() < deadline, f"record {record_id} still {rp.ReplicationStatus.Name(record.status)}"
        await asyncio.sleep(0.1)


async def replicated(caller, backup: bp.Backup, caller_b, vault_b: str) -> rp.ReplicationRecord:
    record = await finished(caller, (await replicate(caller, backup.backup_id, caller_b, vault_b)).replication_record_id)
    assert record.status == rp.REPLICATION_STATUS_SUCCESS, record.error
    assert len(record.source_manifest_digest) >= 32
    assert record.source_manifest_digest == record.replica_manifest_digest
    return record


async def verified_clean(caller_b, vault_id: str, backup_id: str) -> None:
    task = (await caller_b.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault_id,
                                                                          backup_ids=[backup_id]))).task_id
    done = await wait_success(caller_b, task, timeout=120)
    assert int(done.extra_info["checked_chunks"]) > 0
    assert (done.extra_info["bad_chunks"], done.extra_info["corrupt_backups"]) == ("0", "")
    assert not (await get_backup(caller_b, backup_id)).corrupt


async def test_a_disk_replica_restores_in_b_in_place_and_to_a_new_disk(two_regions):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    disk = await create_disk(caller, "e2e-disk", 8 * MIB)
    write_disk(await disk_path(caller, disk.resource_id), seed=501)
    vault = await create_vault(caller, "e2e-disks", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    source_sha = sha256_file(await disk_path(caller, disk.resource_id))
    target = await create_vault(caller_b, "e2e-disk-replicas", DISK, REPLICATION)

    record = await replicated(caller, backup, caller_b, target.vault_id)
    assert (record.source_region, record.destination_region) == (REGION_A, REGION_B)
    replica = await get_backup(caller_b, record.destination_backup_id)
    assert replica.image_type == bp.IMAGE_TYPE_REPLICATION and replica.status == bp.BACKUP_STATUS_AVAILABLE
    source = replica.replicated_from
    assert (source.source_region, source.source_vault_id, source.source_backup_id, source.replication_record_id) == (
        REGION_A, vault.vault_id, backup.backup_id, record.replication_record_id)
    assert source.manifest_digest == record.replica_manifest_digest

    new_disk = await new_disk_from(caller_b, replica.backup_id)  # to a new disk in B
    assert sha256_file(await disk_path(caller_b, new_disk)) == source_sha
    in_place = await create_disk(caller_b, "e2e-target", 8 * MIB)  # in place onto a disk of B
    fill(await disk_path(caller_b, in_place.resource_id), 0, 8, seed=9)
    task = (await caller_b.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=replica.backup_id, volume_id=in_place.resource_id))).task_id
    await wait_success(caller_b, task)
    assert sha256_file(await disk_path(caller_b, in_place.resource_id)) == source_sha
    await verified_clean(caller_b, target.vault_id, replica.backup_id)

    # A replica is never replicated again, and B's copy is B's: deleting the source deletes nothing there.
    again = await caller.replication.ListReplicationRecords(rp.ListReplicationRecordsRequest(
        source_backup_id=backup.backup_id))
    assert again.count == 1
    await wait_success(caller, (await caller.backups.DeleteBackup(bp.DeleteBackupRequest(
        backup_id=backup.backup_id))).task_id)
    assert (await get_backup(caller_b, replica.backup_id)).status == bp.BACKUP_STATUS_AVAILABLE


async def test_an_incremental_of_patched_blocks_replicates_and_restores_in_b(two_regions):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    disk = await create_disk(caller, "e2e-patched", 8 * MIB)
    path = await disk_path(caller, disk.resource_id)
    fill(path, 0, 8, seed=502)
    vault = await create_vault(caller, "e2e-patched", DISK, BACKUP, resources=[ref(disk)])
    full = await backup_now(caller, vault.vault_id)
    with open(path, "r+b") as f:  # a few bytes into three blocks: each keeps 31 of its 32 pages (DESIGN.md 3.1)
        for offset in (5 * 4 * KIB + 7, 3 * MIB + 100, 7 * MIB + 9 * 4 * KIB):
            f.seek(offset)
            f.write(b"patched")
    cp = await checkpoint(caller, vault.vault_id)
    task = await wait_success(caller, cp.resources[0].task_id)
    assert task.extra_info["patched_blocks"] == "3"
    incremental = await get_backup(caller, cp.resources[0].backup_id)
    source_sha = sha256_file(path)
    target = await create_vault(caller_b, "e2e-patched-replicas", DISK, REPLICATION)

    await replicated(caller, full, caller_b, target.vault_id)
    record = await replicated(caller, incremental, caller_b, target.vault_id)  # its manifest crosses as a delta
    new_disk = await new_disk_from(caller_b, record.destination_backup_id)
    assert sha256_file(await disk_path(caller_b, new_disk)) == source_sha
    await verified_clean(caller_b, target.vault_id, record.destination_backup_id)


async def test_a_two_disk_server_and_a_file_system_restore_in_b(two_regions, tmp_path):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    server = await create_server(caller, "e2e-server")
    shas = []
    for i, d in enumerate(server.disks):
        path = await disk_path(caller, d.disk_id)
        write_disk(path, seed=600 + i)
        shas.append(sha256_file(path))
    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="e2e-share"))).file_system
    build_tree(fs.path)
    expected_tree = describe(fs.path)

    server_vault = await create_vault(caller, "e2e-servers", SERVER, BACKUP, resources=[ref(server)])
    server_backup = await backup_now(caller, server_vault.vault_id)
    server_target = await create_vault(caller_b, "e2e-server-replicas", SERVER, REPLICATION)
    record = await replicated(caller, server_backup, caller_b, server_target.vault_id)
    replica = await get_backup(caller_b, record.destination_backup_id)
    assert len(replica.children) == 2
    children = [await get_backup(caller_b, c.backup_id) for c in replica.children]
    # In place onto a server of B with two disks of the same sizes, each disk from its own child.
    target_server = await create_server(caller_b, "e2e-target-server")
    by_device = {c.device: c for c in children}
    source_disks = {d.disk_id: i for i, d in enumerate(server.disks)}
    mappings = []
    for child, disk in zip(sorted(by_device.values(), key=lambda c: c.device), target_server.disks):
        mappings.append(bp.RestoreMapping(backup_id=child.backup_id, volume_id=disk.disk_id))
    task = (await caller_b.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=replica.backup_id, server_id=target_server.resource_id, mappings=mappings))).task_id
    await wait_success(caller_b, task, timeout=120)
    for mapping in mappings:
        child = next(c for c in children if c.backup_id == mapping.backup_id)
        want = shas[source_disks[child.resource_id]]
        assert sha256_file(await disk_path(caller_b, mapping.volume_id)) == want

    fs_vault = await create_vault(caller, "e2e-shares", TURBO, BACKUP, resources=[ref(fs)])
    fs_backup = await backup_now(caller, fs_vault.vault_id)
    fs_target = await create_vault(caller_b, "e2e-share-replicas", TURBO, REPLICATION)
    fs_record = await replicated(caller, fs_backup, caller_b, fs_target.vault_id)
    fs_b = (await caller_b.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="e2e-share-b"))).file_system
    task = (await caller_b.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=fs_record.destination_backup_id, file_system_id=fs_b.resource_id, target_path="from-a"))).task_id
    await wait_success(caller_b, task, timeout=120)
    assert describe(os.path.join(fs_b.path, "from-a")) == expected_tree
    for vault_id, backup_id in ((server_target.vault_id, replica.backup_id),
                                (fs_target.vault_id, fs_record.destination_backup_id)):
        await verified_clean(caller_b, vault_id, backup_id)


async def test_only_what_b_lacks_crosses_and_an_unchanged_replica_is_small(two_regions):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    disk = await create_disk(caller, "e2e-bytes", 16 * MIB)
    path = await disk_path(caller, disk.resource_id)
    write_disk(path, seed=701, chunks=24)
    vault = await create_vault(caller, "e2e-bytes", DISK, BACKUP, resources=[ref(disk)])
    target = await create_vault(caller_b, "e2e-bytes-replicas", DISK, REPLICATION)
    full = await replicated(caller, await backup_now(caller, vault.vault_id), caller_b, target.vault_id)
    assert full.counters.chunk_bytes_sent > 0 and full.counters.present_bytes == 0
    assert full.transferred_bytes == full.counters.chunk_bytes_sent + full.counters.resent_bytes

    fill(path, 2, 1, seed=702)  # one MiB changes
    changed = await replicated(caller, await backup_now(caller, vault.vault_id), caller_b, target.vault_id)
    assert 0 < changed.counters.chunk_bytes_sent <= 2 * MIB
    assert changed.counters.present_bytes > 0  # the rest was there already

    same = await replicated(caller, await backup_now(caller, vault.vault_id), caller_b, target.vault_id)
    assert same.counters.chunk_bytes_sent == 0 and same.counters.chunks_sent == 0
    assert same.counters.metadata_bytes < 512 * KIB
    listed = await caller_b.backups.ListBackups(bp.ListBackupsRequest(vault_id=target.vault_id))
    assert listed.count == 3


async def test_one_request_id_and_ten_concurrent_calls_give_one_replica(two_regions):
    a, b = two_regions.a, two_regions.b
    caller, caller_b = a.caller(), b.caller()
    disk = await create_disk(caller, "e2e-once", 8 * MIB)
    write_disk(await disk_path(caller, disk.resource_id), seed=801)
    vault = await create_vault(caller, "e2e-once", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    target = await create_vault(caller_b, "e2e-once-replicas", DISK, REPLICATION)

    first = await replicate(caller, backup.backup_id, caller_b, target.vault_id, request_id="req-e2e-1")
    second = await replicate(caller, backup.backup_id, caller_b, target.vault_id, request_id="req-e2e-1")
    assert first.replication_record_id == second.replication_record_id
    await finished(caller, first.replication_record_id)

    other = await backup_now(caller, vault.vault_id)
    answers = await asyncio.gather(*(replicate(caller, other.backup_id, caller_b, target.vault_id)
                                     for _ in range(10)), return_exceptions=True)
    assert not [r for r in answers if isinstance(r, BaseException)], answers  # each answers the one record
    records = {r.replication_record_id for r in answers}
    assert len(records) == 1
    assert (await finished(caller, records.pop())).status == rp.REPLICATION_STATUS_SUCCESS
    listed = await caller_b.backups.ListBackups(bp.ListBackupsRequest(vault_id=target.vault_id))
    assert sorted(r.replicated_from.source_backup_id for r in listed.backups) == sorted(
        [backup.backup_id, other.backup_id])
