"""The retained-base rules through the services on an XFS pool (DESIGN.md 16.2): a disk keeps one snapshot, its
newest backup's; a cancelled or killed backup leaves none of its own and never takes the base; a deleted base
backup and a disk that leaves its vault take theirs with them."""
from __future__ import annotations

import os
import signal

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.backups import (disk_path, fill, new_disk_from, running_with_progress, sha256_file, wait_success,
                                   wait_task, checkpoint)
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.pool_snapshots import backup_of, settled_snapshots, snapshots_of
from tests.support.workers import without_shared_workers, worker_processes


async def tracked_disk(caller, name: str, seed: int):
    disk = await create_disk(caller, name, 64 * MIB)
    fill(disk.path, 0, 48, seed=seed)
    vault = await create_vault(caller, name, DISK, BACKUP, resources=[ref(disk)])
    return disk, vault


async def test_a_cancelled_backup_leaves_only_the_base(xfs_services):
    services, caller = xfs_services, xfs_services.caller()
    disk, vault = await tracked_disk(caller, "cancelled", 21)
    base, _ = await backup_of(caller, vault.vault_id)
    fill(disk.path, 0, 32, seed=22)  # the incremental has 32 MiB to read: long enough at 2 MB/s to cancel it
    async with without_shared_workers(services):
        await services.start_worker(rate_limit_mbps=2)
        cp = await checkpoint(caller, vault.vault_id)
        await running_with_progress(caller, cp.resources[0].task_id)
        assert sorted(snapshots_of(services, caller.project_id, disk.resource_id)) == sorted(
            [base.backup_id, cp.resources[0].backup_id])
        await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=cp.resources[0].task_id))
        task = await wait_task(caller, cp.resources[0].task_id)
        assert task.status == tp.TASK_STATUS_CANCELLED
    await settled_snapshots(services, caller.project_id, disk.resource_id, [base.backup_id])  # still the base
    after, info = await backup_of(caller, vault.vault_id)
    assert info["base_backup_id"] == base.backup_id and int(info["read_bytes"]) <= 40 * MIB
    await settled_snapshots(services, caller.project_id, disk.resource_id, [after.backup_id])


async def test_a_worker_killed_mid_backup_leaves_no_snapshot_behind_after_the_retry(xfs_services):
    services, caller = xfs_services, xfs_services.caller()
    disk, vault = await tracked_disk(caller, "killed", 31)
    base, _ = await backup_of(caller, vault.vault_id)
    fill(disk.path, 0, 32, seed=32)
    image = sha256_file(disk.path)
    async with without_shared_workers(services):
        with worker_processes(services, 1, CBR_RATE_LIMIT_MBPS=2) as (slow,):
            cp = await checkpoint(caller, vault.vault_id)
            await running_with_progress(caller, cp.resources[0].task_id)
            os.kill(slow.pid, signal.SIGKILL)
            slow.wait(10)
        # The killed run's snapshot is still there, and the base too.
        assert len(snapshots_of(services, caller.project_id, disk.resource_id)) == 2
        with worker_processes(services, 1):
            task = await wait_success(caller, cp.resources[0].task_id, timeout=120)
            # The worker releases the older snapshots just after the task succeeds: it stays up until then.
            await settled_snapshots(services, caller.project_id, disk.resource_id, [cp.resources[0].backup_id])
    assert task.extra_info["attempts"] == "2"
    restored = await disk_path(caller, await new_disk_from(caller, cp.resources[0].backup_id))
    assert sha256_file(restored) == image


async def test_a_deleted_base_and_a_disk_leaving_its_vault_release_their_snapshots(xfs_services):
    services, caller = xfs_services, xfs_services.caller()
    disk, vault = await tracked_disk(caller, "deleted", 41)
    full, _ = await backup_of(caller, vault.vault_id)
    fill(disk.path, 8, 4, seed=42)
    latest, _ = await backup_of(caller, vault.vault_id)
    await settled_snapshots(services, caller.project_id, disk.resource_id, [latest.backup_id])

    deleted = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=latest.backup_id))
    await wait_success(caller, deleted.task_id)
    await settled_snapshots(services, caller.project_id, disk.resource_id, [])

    # The next incremental's base (the full one) has no snapshot: it reads every allocated block, and is right.
    image = sha256_file(disk.path)
    again, info = await backup_of(caller, vault.vault_id)
    assert again.incremental and info["base_backup_id"] == full.backup_id and int(info["read_bytes"]) >= 48 * MIB
    assert sha256_file(await disk_path(caller, await new_disk_from(caller, again.backup_id))) == image
    await settled_snapshots(services, caller.project_id, disk.resource_id, [again.backup_id])

    await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id,
                                                                 resource_ids=[disk.resource_id]))
    await settled_snapshots(services, caller.project_id, disk.resource_id, [])  # the event releases it


async def test_a_disk_migrated_to_another_vault_releases_the_source_vaults_base(xfs_services):
    services, caller = xfs_services, xfs_services.caller()
    disk, vault = await tracked_disk(caller, "migrated", 51)
    base, _ = await backup_of(caller, vault.vault_id)
    await settled_snapshots(services, caller.project_id, disk.resource_id, [base.backup_id])
    other = await create_vault(caller, "migrated-to", DISK, BACKUP)
    await caller.vault.MigrateResources(vp.MigrateResourcesRequest(
        vault_id=vault.vault_id, destination_vault_id=other.vault_id, resource_ids=[disk.resource_id]))
    await settled_snapshots(services, caller.project_id, disk.resource_id, [])
    moved, _ = await backup_of(caller, other.vault_id)  # the new vault's first backup: its base from now on
    await settled_snapshots(services, caller.project_id, disk.resource_id, [moved.backup_id])
