"""Backup workers as their users meet them: two worker processes sharing jobs, a worker killed with SIGKILL
mid-backup (no available backup until a retry finishes it, then a byte-exact restore), cancelling a running
backup, and garbage collection racing a running backup."""
from __future__ import annotations

import asyncio
import os
import signal

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from tests.support.backups import (backup_now, checkpoint, disk_in_vault, disk_path, fill, get_backup, new_disk_from,
                                   running_with_progress, sha256_file, wait_success, wait_task)
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, expect_error, ref
from tests.support.workers import is_worker_of, no_inprocess_workers, worker_processes  # noqa: F401 - a fixture

RUNNING = tp.TASK_STATUS_RUNNING


async def test_two_worker_processes_share_the_jobs(caller, no_inprocess_workers):
    disks = [await create_disk(caller, f"d{i}", 8 * MIB) for i in range(4)]
    for i, disk in enumerate(disks):
        fill(disk.path, 0, 4, seed=i)
    vault = await create_vault(caller, "shared", DISK, BACKUP, resources=[ref(d) for d in disks])
    with worker_processes(no_inprocess_workers, 2, CBR_RATE_LIMIT_MBPS=8) as procs:
        cp = await checkpoint(caller, vault.vault_id)
        tasks = [await wait_success(caller, r.task_id, timeout=90) for r in cp.resources]
        workers = {t.extra_info["worker"] for t in tasks}
        assert len(workers) == len(procs) and all(any(is_worker_of(w, p.pid) for w in workers) for p in procs), \
            workers
    for r, disk in zip(sorted(cp.resources, key=lambda r: r.resource_id), sorted(disks, key=lambda d: d.resource_id)):
        restored = await _restore_elsewhere(caller, no_inprocess_workers, r.backup_id)
        assert sha256_file(restored) == sha256_file(disk.path)


async def _restore_elsewhere(caller, services, backup_id: str) -> str:
    with worker_processes(services, 1):
        return await disk_path(caller, await new_disk_from(caller, backup_id))


async def test_a_killed_worker_is_retried_and_nothing_is_available_before(caller, no_inprocess_workers):
    services = no_inprocess_workers
    disk = await create_disk(caller, "victim", 48 * MIB)
    fill(disk.path, 0, 40, seed=7)
    image = sha256_file(disk.path)
    vault = await create_vault(caller, "kill9", DISK, BACKUP, resources=[ref(disk)])
    with worker_processes(services, 1, CBR_RATE_LIMIT_MBPS=10) as (slow,):
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        await running_with_progress(caller, task_id)
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait(10)
    # Nobody holds the job now: until its lease ends and another worker finishes it, it is not available.
    for _ in range(10):
        backup = await get_backup(caller, backup_id)
        assert backup.status == bp.BACKUP_STATUS_PROTECTING
        listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id,
                                                                        status=[bp.BACKUP_STATUS_AVAILABLE]))
        assert listed.count == 0
        await asyncio.sleep(0.1)
    with worker_processes(services, 1) as (fresh,):
        task = await wait_success(caller, task_id, timeout=60)
        assert is_worker_of(task.extra_info["worker"], fresh.pid)
        assert int(task.extra_info["attempts"]) == 2
        assert (await get_backup(caller, backup_id)).status == bp.BACKUP_STATUS_AVAILABLE
        restored = await disk_path(caller, await new_disk_from(caller, backup_id))
    assert sha256_file(restored) == image


async def test_cancel_a_running_backup(caller, no_inprocess_workers):
    services = no_inprocess_workers
    disk = await create_disk(caller, "slow", 48 * MIB)
    fill(disk.path, 0, 40, seed=8)
    vault = await create_vault(caller, "cancel", DISK, BACKUP, resources=[ref(disk)])
    await services.start_worker(rate_limit_mbps=10)
    cp = await checkpoint(caller, vault.vault_id)
    task_id = cp.resources[0].task_id
    await running_with_progress(caller, task_id)
    asked = (await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=task_id))).task
    assert asked.status == RUNNING and asked.extra_info["cancel_requested"] == "true"
    # The worker stops at its next heartbeat, leaves no backup behind, and only then is the task cancelled.
    final = await wait_task(caller, task_id, timeout=20)
    assert final.status == tp.TASK_STATUS_CANCELLED and final.error.code == ""
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 0 and not services.workers[0][0].current
    # The rule (README, "Cancelling"): the backup is discarded and the task says so instead of linking to it.
    assert final.backup_id == "" and final.extra_info["discarded_backup_id"] == cp.resources[0].backup_id
    await expect_error(get_backup(caller, cp.resources[0].backup_id), grpc.StatusCode.NOT_FOUND)
    # Its bytes and percent agree: how far it got, not 0% of everything or 100% of a part.
    assert 0 < final.bytes_done <= final.bytes_total
    assert final.progress == final.bytes_done * 100 // final.bytes_total
    await services.stop_workers()
    await services.start_worker()
    again = await checkpoint(caller, vault.vault_id)
    assert again.resources and not again.skipped_resources
    await wait_success(caller, again.resources[0].task_id, timeout=60)


async def test_cancel_a_waiting_backup_frees_the_resource_at_once(caller, no_inprocess_workers):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=9)
    cp = await checkpoint(caller, vault.vault_id)  # no worker runs: it waits
    task = (await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=cp.resources[0].task_id))).task
    assert task.status == tp.TASK_STATUS_CANCELLED
    assert task.backup_id == "" and task.extra_info["discarded_backup_id"] == cp.resources[0].backup_id
    assert (await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))).count == 0
    again = await checkpoint(caller, vault.vault_id)
    assert again.resources and not again.skipped_resources
    await no_inprocess_workers.start_worker()
    await wait_success(caller, again.resources[0].task_id)
    # The cancelled job, when a worker took it, changed nothing.
    assert (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task.task_id))).task.status == \
        tp.TASK_STATUS_CANCELLED


async def test_gc_with_no_grace_never_takes_a_chunk_a_running_backup_needs(caller, no_inprocess_workers):
    """Backup X; backup Y of the same data starts (slowly) and reuses X's chunks; X is deleted and GC runs with
    grace 0 while Y is held mid-way; Y then completes and restores byte-exact."""
    services = no_inprocess_workers
    disk = await create_disk(caller, "race", 40 * MIB)
    fill(disk.path, 0, 32, seed=10)
    image = sha256_file(disk.path)
    vault = await create_vault(caller, "race", DISK, BACKUP, resources=[ref(disk)])
    await services.start_worker()
    x = await backup_now(caller, vault.vault_id)
    await services.stop_workers()

    await services.start_worker(rate_limit_mbps=8)  # takes Y and stays busy with it
    y_cp = await checkpoint(caller, vault.vault_id, incremental=False)  # reads everything: slow and mid-way
    y_task = y_cp.resources[0].task_id
    await running_with_progress(caller, y_task)
    await services.start_worker()  # a second worker for the delete and the GC
    deleted = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=x.backup_id))
    delete_task = await wait_success(caller, deleted.task_id, timeout=30)
    assert delete_task.extra_info["chunks_kept_for_running_backups"] == "true"
    gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id, grace_seconds=0))
    gc_task = await wait_success(caller, gc.task_id, timeout=30)
    assert gc_task.extra_info["exclusive"] == "false"
    assert (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=y_task))).task.status == RUNNING

    await wait_success(caller, y_task, timeout=90)
    y = await get_backup(caller, y_cp.resources[0].backup_id)
    assert y.status == bp.BACKUP_STATUS_AVAILABLE
    restored = await disk_path(caller, await new_disk_from(caller, y.backup_id))
    assert sha256_file(restored) == image


async def test_watch_streams_progress_and_busy_resources_stay(caller, no_inprocess_workers):
    """WatchTask sends the running backup's progress as it grows; meanwhile the disk cannot be deleted."""
    import grpc
    from tests.support.calls import expect_error
    services = no_inprocess_workers
    disk = await create_disk(caller, "watched", 40 * MIB)
    fill(disk.path, 0, 32, seed=11)
    vault = await create_vault(caller, "watch", DISK, BACKUP, resources=[ref(disk)])
    await services.start_worker(rate_limit_mbps=12)
    cp = await checkpoint(caller, vault.vault_id)
    task_id = cp.resources[0].task_id
    from cbr.backup.v1 import protectable_pb2 as pp
    await expect_error(caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id)),
                       grpc.StatusCode.FAILED_PRECONDITION, "BackupService.6732")
    seen = []
    async for reply in caller.tasks.WatchTask(tp.WatchTaskRequest(task_id=task_id), timeout=60):
        seen.append((reply.task.status, reply.task.progress, reply.task.bytes_done, reply.task.bytes_total))
    middle = [s for s in seen if s[0] == RUNNING and 0 < s[1] < 100]
    assert len(middle) >= 2 and middle == sorted(middle, key=lambda s: s[2]), seen
    assert 32 * MIB <= middle[0][3] < 40 * MIB  # the bytes to read: the written part, not the holes
    assert seen[-1][:2] == (tp.TASK_STATUS_SUCCESS, 100)
    assert seen[-1][2] == seen[-1][3] > 0  # a success did all there was to do: done == total
    from cbr.vault.v1 import vault_pb2 as vp
    await caller.vault.RemoveResources(vp.RemoveResourcesRequest(vault_id=vault.vault_id,
                                                                 resource_ids=[disk.resource_id]))
    await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id))  # free again
