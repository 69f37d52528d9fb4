"""Disk backups through gRPC with a real worker, Postgres, NATS and chunk store: round trips that are
byte-exact, incremental chains, deletes, list filters, and every bad input answering its code with nothing
written."""
from __future__ import annotations

import grpc
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.backup.v1 import task_pb2 as tp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.backups import (backup_now, checkpoint, disk_in_vault, disk_path, get_backup, new_disk_from,
                                   sha256_file, wait_success, write_disk)
from tests.support.calls import (BACKUP, DISK, MIB, SERVER, REPLICATION, create_disk, create_server, create_vault,
                                 expect_error, ref)
from tests.support.services import eventually

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION
AVAILABLE = bp.BACKUP_STATUS_AVAILABLE


async def test_full_incremental_new_disk_and_in_place(caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=1)
    original = sha256_file(disk.path)
    first = await backup_now(caller, vault.vault_id, name="first")
    assert first.status == AVAILABLE and first.name == "first" and first.resource_id == disk.resource_id
    assert 0 < first.logical_bytes < 8 * MIB and 0 < first.stored_bytes <= first.logical_bytes  # holes left out
    assert not first.incremental  # nothing to compare with
    assert first.protected_time.seconds > 0

    write_disk(disk.path, seed=2, chunks=2)
    changed = sha256_file(disk.path)
    assert changed != original
    second = await backup_now(caller, vault.vault_id)
    assert second.name.startswith("manualbk_") and second.incremental

    # A new disk from each backup holds exactly what the disk held then.
    for backup, expected in ((first, original), (second, changed)):
        new_id = await new_disk_from(caller, backup.backup_id, name="copy")
        assert sha256_file(await disk_path(caller, new_id)) == expected

    # In place: the source disk goes back to the first backup's bytes.
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=first.backup_id))
    task = await wait_success(caller, reply.task_id)
    assert task.operation_type == tp.OPERATION_TYPE_RESTORE and task.progress == 100
    assert sha256_file(disk.path) == original
    assert (await get_backup(caller, first.backup_id)).status == AVAILABLE

    # The vault learns its usage from the backup service's events.
    async def used():
        v = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
        return v.used_bytes > 0
    await eventually(used)


async def test_a_larger_new_disk_and_a_disk_restored_onto_another(caller):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=3)
    original = sha256_file(disk.path)
    backup = await backup_now(caller, vault.vault_id)
    bigger = await new_disk_from(caller, backup.backup_id, size_bytes=6 * MIB)
    path = await disk_path(caller, bigger)
    with open(path, "rb") as f:
        head = f.read(4 * MIB)
        assert f.read() == bytes(2 * MIB)
    with open(disk.path, "rb") as f:
        assert head == f.read()

    other = await create_disk(caller, "other", 4 * MIB)
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id,
                                                                       volume_id=other.resource_id))
    await wait_success(caller, reply.task_id)
    assert sha256_file(other.path) == original


async def test_deleting_a_middle_backup_leaves_the_others_restorable(caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=4)
    images, backups = [], []
    for step in range(3):
        if step == 1:
            write_disk(disk.path, seed=11, chunks=2)
        elif step == 2:  # all of it: no block of the middle backup's stays, not even as a patch's base
            write_disk(disk.path, seed=12, chunks=1, chunk=8 * MIB)
        images.append(sha256_file(disk.path))
        backups.append(await backup_now(caller, vault.vault_id))

    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backups[1].backup_id))
    task = await wait_success(caller, reply.task_id)
    assert task.operation_type == tp.OPERATION_TYPE_DELETE
    assert int(task.extra_info["freed_bytes"]) > 0  # the middle backup's own chunks went with it
    await expect_error(caller.backups.GetBackup(bp.GetBackupRequest(backup_id=backups[1].backup_id)), NOT_FOUND,
                       "BackupService.6721")
    for index in (0, 2):
        new_id = await new_disk_from(caller, backups[index].backup_id)
        assert sha256_file(await disk_path(caller, new_id)) == images[index]
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 2 and {b.backup_id for b in listed.backups} == {backups[0].backup_id,
                                                                         backups[2].backup_id}


async def test_list_filters_sort_and_update(caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=5)
    a = await backup_now(caller, vault.vault_id, name="alpha")
    b = await backup_now(caller, vault.vault_id, name="beta")
    newest_first = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert [x.backup_id for x in newest_first.backups] == [b.backup_id, a.backup_id]
    by_name = await caller.backups.ListBackups(bp.ListBackupsRequest(sort="name:asc"))
    assert [x.name for x in by_name.backups] == ["alpha", "beta"]
    named = await caller.backups.ListBackups(bp.ListBackupsRequest(name="lph"))
    assert [x.backup_id for x in named.backups] == [a.backup_id]
    paged = await caller.backups.ListBackups(bp.ListBackupsRequest(page={"limit": 1, "offset": 1}))
    assert paged.count == 2 and [x.backup_id for x in paged.backups] == [a.backup_id]
    by_status = await caller.backups.ListBackups(bp.ListBackupsRequest(status=[bp.BACKUP_STATUS_ERROR]))
    assert by_status.count == 0
    by_resource = await caller.backups.ListBackups(bp.ListBackupsRequest(resource_id=disk.resource_id,
                                                                         resource_type=DISK))
    assert by_resource.count == 2

    updated = (await caller.backups.UpdateBackup(bp.UpdateBackupRequest(
        backup_id=a.backup_id, name="renamed", description="kept for audit"))).backup
    assert (updated.name, updated.description) == ("renamed", "kept for audit")
    await expect_error(caller.backups.UpdateBackup(bp.UpdateBackupRequest(backup_id=a.backup_id, name="")),
                       INVALID, "BackupService.6501")
    await expect_error(caller.backups.ListBackups(bp.ListBackupsRequest(sort="size:asc")), INVALID,
                       "BackupService.6702")
    cp = (await caller.backups.GetCheckpoint(bp.GetCheckpointRequest(checkpoint_id=a.checkpoint_id))).checkpoint
    assert cp.vault_id == vault.vault_id and [r.backup_id for r in cp.resources] == [a.backup_id]
    assert cp.status == bp.CHECKPOINT_STATUS_AVAILABLE


async def test_another_project_sees_nothing(services, caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=6)
    backup = await backup_now(caller, vault.vault_id)
    stranger = services.caller()
    await expect_error(stranger.backups.GetBackup(bp.GetBackupRequest(backup_id=backup.backup_id)), NOT_FOUND)
    await expect_error(stranger.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id)),
                       NOT_FOUND)
    await expect_error(stranger.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault.vault_id)),
                       NOT_FOUND, "BackupService.6720")
    assert (await stranger.backups.ListBackups(bp.ListBackupsRequest())).count == 0
    reader = services.caller(project_id=caller.project_id, roles=("cbr_readonly",))
    await expect_error(reader.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id)),
                       grpc.StatusCode.PERMISSION_DENIED)
    assert (await reader.backups.GetBackup(bp.GetBackupRequest(backup_id=backup.backup_id))).backup.backup_id


async def test_bad_inputs_answer_their_codes_and_write_nothing(caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=7)
    backup = await backup_now(caller, vault.vault_id)
    server = await create_server(caller, "srv", disks=1)
    attached = server.disks[0].disk_id
    small = await create_disk(caller, "small", 1 * MIB)
    other_vault = await create_vault(caller, "empty", DISK, BACKUP)
    before_tasks = (await caller.tasks.ListTasks(tp.ListTasksRequest())).count
    before_backups = (await caller.backups.ListBackups(bp.ListBackupsRequest())).count
    unknown = "00000000-0000-4000-8000-000000000000"

    cases = [
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id="nope")), INVALID, "BackupService.6504"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=unknown)), NOT_FOUND, "BackupService.6720"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=other_vault.vault_id)), INVALID,
         "BackupService.6703"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
            vault_id=vault.vault_id, resource_ids=[small.resource_id])), INVALID, "BackupService.6703"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
            vault_id=vault.vault_id, resource_ids=[disk.resource_id, disk.resource_id])), INVALID,
         "BackupService.6703"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault.vault_id, name="a/b")), INVALID,
         "BackupService.6501"),
        (caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault.vault_id, description="x" * 256)),
         INVALID, "BackupService.6701"),
        (caller.backups.GetBackup(bp.GetBackupRequest(backup_id=unknown)), NOT_FOUND, "BackupService.6721"),
        (caller.backups.GetCheckpoint(bp.GetCheckpointRequest(checkpoint_id=unknown)), NOT_FOUND,
         "BackupService.6722"),
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=unknown)), NOT_FOUND, "BackupService.6721"),
        # The reference CBR refuses to restore onto a disk attached to a server.
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id, volume_id=attached)),
         FAILED, "BackupService.7003"),
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id,
                                                              volume_id=small.resource_id)), INVALID,
         "BackupService.6706"),
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id, volume_id=unknown)),
         NOT_FOUND, "BackupService.6521"),
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id, target_path="x")), INVALID,
         "BackupService.6704"),
        (caller.backups.RestoreBackup(bp.RestoreBackupRequest(
            backup_id=backup.backup_id, mappings=[bp.RestoreMapping(backup_id=unknown, volume_id=unknown)])),
         INVALID, "BackupService.6704"),
        (caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
            backup_id=backup.backup_id, name="tiny", size_bytes=1 * MIB)), INVALID, "BackupService.6706"),
        (caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
            backup_id=backup.backup_id, name="../evil")), INVALID, "BackupService.6501"),
        (caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(backup_id=unknown, name="n")), NOT_FOUND,
         "BackupService.6721"),
        (caller.backups.ListBackups(bp.ListBackupsRequest(status=[99])), INVALID, "BackupService.6400"),  # edge
        (caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id, grace_seconds=-1)), INVALID,
         "BackupService.6707"),
        (caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=unknown)), NOT_FOUND, "BackupService.6720"),
    ]
    for call, code, cbr_code in cases:
        await expect_error(call, code, cbr_code)
    assert (await caller.tasks.ListTasks(tp.ListTasksRequest())).count == before_tasks
    assert (await caller.backups.ListBackups(bp.ListBackupsRequest())).count == before_backups
    disks = await caller.protectables.ListProtectables(pp.ListProtectablesRequest(type=DISK))
    assert {d.name for d in disks.protectables} == {"disk-7", "srv-disk0", "small"}


async def test_replication_vault_takes_no_checkpoint(caller):
    server = await create_server(caller, "srv-r", disks=1)
    vault = await create_vault(caller, "replicas", SERVER, REPLICATION, resources=[ref(server)])
    await expect_error(caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault.vault_id)),
                       FAILED, "BackupService.6730")


async def test_a_busy_resource_is_skipped_with_a_code(caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=8)
    first = await checkpoint(caller, vault.vault_id)
    second = await checkpoint(caller, vault.vault_id)
    assert len(first.resources) == 1 and not first.skipped_resources
    assert not second.resources and [s.code for s in second.skipped_resources] == ["BackupService.6732"]
    assert second.skipped_resources[0].resource_id == disk.resource_id
    await wait_success(caller, first.resources[0].task_id)
    third = await checkpoint(caller, vault.vault_id)  # free again once the first one ended
    await wait_success(caller, third.resources[0].task_id)


@pytest.mark.parametrize("auto_expand", [False, True])
async def test_a_full_vault(caller, auto_expand):
    """A 1 GiB vault and a 1200 MiB disk: without auto_expand its first (full) backup is refused when the
    checkpoint is made, before anything is read (more in test_honest_results.py); with it, 1.1 GiB of random
    data are backed up and the vault grows 1.25x (to 2 GiB)."""
    import os
    disk = await create_disk(caller, "big", 1200 * MIB)
    vault = await create_vault(caller, "one-gib", DISK, BACKUP, size_gb=1, resources=[ref(disk)],
                               auto_expand=auto_expand)
    if not auto_expand:
        cp = await checkpoint(caller, vault.vault_id)
        assert not cp.resources and [s.code for s in cp.skipped_resources] == ["BackupService.6740"]
        os.unlink(disk.path)
        return
    with open(disk.path, "r+b") as f:
        for _ in range(1100):
            f.write(os.urandom(MIB))
    cp = await checkpoint(caller, vault.vault_id)
    from tests.support.backups import wait_task
    task = await wait_task(caller, cp.resources[0].task_id, timeout=120)
    backup = await get_backup(caller, cp.resources[0].backup_id)
    assert task.status == tp.TASK_STATUS_SUCCESS and backup.status == AVAILABLE

    async def grown():
        return (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.size_gb == 2
    await eventually(grown)
    os.unlink(disk.path)  # give the gigabyte back at once


async def test_automatic_backups_of_a_locked_vault_stay_until_they_expire(services, caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=30, locked=True)
    await expect_error(caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=vault.vault_id, auto_trigger=True)), grpc.StatusCode.PERMISSION_DENIED)
    policy_service = services.caller(caller.project_id, roles=("service",))
    auto = await backup_now(policy_service, vault.vault_id, auto_trigger=True, retention_duration_days=7)
    assert auto.auto_trigger and auto.name.startswith("autobk_")
    assert auto.expired_time.ToSeconds() - auto.created_time.ToSeconds() == 7 * 86400
    await expect_error(caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=auto.backup_id)), FAILED,
                       "BackupService.6733")
    manual = await backup_now(caller, vault.vault_id)
    assert not manual.HasField("expired_time")
    await wait_success(caller, (await caller.backups.DeleteBackup(bp.DeleteBackupRequest(
        backup_id=manual.backup_id))).task_id)
    await expect_error(policy_service.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=vault.vault_id, retention_duration_days=100000)), INVALID, "BackupService.6708")


async def test_a_repeated_request_id_returns_the_first_checkpoint(caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=31)
    first = await checkpoint(caller, vault.vault_id, request_id="tick-1")
    again = await checkpoint(caller, vault.vault_id, request_id="tick-1")
    assert again.checkpoint_id == first.checkpoint_id and len(again.resources) == 1
    await wait_success(caller, first.resources[0].task_id)
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 1
    _, elsewhere = await disk_in_vault(caller, 2 * MIB, seed=32)
    await expect_error(caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=elsewhere.vault_id, request_id="tick-1")), grpc.StatusCode.ALREADY_EXISTS, "BackupService.6710")
    other = await checkpoint(caller, vault.vault_id, request_id="tick-2")
    assert other.checkpoint_id != first.checkpoint_id
    await wait_success(caller, other.resources[0].task_id)
    await expect_error(caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=vault.vault_id, request_id="bad id!")), INVALID, "BackupService.6709")
