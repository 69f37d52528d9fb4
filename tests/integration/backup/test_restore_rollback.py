"""In-place restores are never silently half-done: a corrupt chunk found part-way rolls the disk back to its
restore point (DATA_LOSS, the disk as it was, available), and so does a pool that runs out of room
(RESOURCE_EXHAUSTED, at once); without a restore point the disk ends `error`, never
`available`; a worker killed with SIGKILL mid-restore leaves the disk `restoring` until a retry on another
worker completes it. The task reports the bytes it really wrote."""
from __future__ import annotations

import asyncio
import os
import signal

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import protectable_pb2 as pp
from cbr.backup.v1 import task_pb2 as tp
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.providers.local import RESTORE_POINTS, LocalProvider
from tests.support.backups import backup_now, fill, running_with_progress, sha256_file, wait_success, wait_task
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.mounts import small_file_system
from tests.support.packs import chunk_objects, flip_pack_byte
from tests.support.workers import is_worker_of, without_shared_workers, worker_processes

AVAILABLE, RESTORING, ERROR = (pp.PROTECTABLE_STATUS_AVAILABLE, pp.PROTECTABLE_STATUS_RESTORING,
                               pp.PROTECTABLE_STATUS_ERROR)


def chunk_files(services, vault_id: str) -> set:
    store = FsChunkStore(services.infra.base / "store")
    return {store.path_for(key) for key in chunk_objects(store, vault_id)}


def restore_points(services, caller) -> list[str]:
    folder = services.infra.base / "pool" / caller.project_id / RESTORE_POINTS
    return sorted(os.listdir(folder)) if folder.exists() else []


async def disk_status(caller, disk_id: str) -> int:
    reply = await caller.protectables.GetProtectable(pp.GetProtectableRequest(type=DISK, resource_id=disk_id))
    return reply.protectable.status


async def backup_with_a_corrupt_late_chunk(services, caller, name: str):
    """A 32 MiB disk of random data, a backup B whose chunk of the disk's last MiB is corrupt (flipped bytes in
    its file), and then the disk rewritten: (disk, good backup, B, the disk's sha256 before any restore)."""
    disk = await create_disk(caller, name, 32 * MIB)
    fill(disk.path, 0, 32, seed=51)
    vault = await create_vault(caller, name, DISK, BACKUP, resources=[ref(disk)])
    good = await backup_now(caller, vault.vault_id)
    first_chunks = chunk_files(services, vault.vault_id)
    fill(disk.path, 31, 1, seed=52)
    damaged = await backup_now(caller, vault.vault_id)
    late = sorted(chunk_files(services, vault.vault_id) - first_chunks)
    assert len(late) == 1  # one pack of the last MiB's 128 KiB blocks: only the last pieces of a restore need them
    flip_pack_byte(late[0], 3 * 128 * 1024 + 100)  # its fourth chunk (random data: stored bare, 128 KiB each)
    fill(disk.path, 0, 32, seed=53)
    return disk, good, damaged, sha256_file(disk.path)


async def restore(caller, backup_id: str) -> str:
    return (await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup_id))).task_id


async def test_a_corrupt_chunk_found_part_way_rolls_the_disk_back(services, caller):
    disk, _, damaged, before = await backup_with_a_corrupt_late_chunk(services, caller, "rollback")
    task = await wait_task(caller, await restore(caller, damaged.backup_id))
    assert task.status == tp.TASK_STATUS_FAILED and task.error.code == "BackupService.6582"  # DATA_LOSS
    assert sha256_file(disk.path) == before  # every block as it was, the ones written before the bad chunk too
    assert await disk_status(caller, disk.resource_id) == AVAILABLE
    assert restore_points(services, caller) == []
    backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=damaged.backup_id))).backup
    assert backup.status == bp.BACKUP_STATUS_AVAILABLE


async def test_a_pool_out_of_room_fails_the_restore_at_once_and_rolls_back(services, caller):
    """The project's disks on a 12 MiB file system: a restore that must write 7 MiB more than the disk holds
    while 3 MiB are free fails on its first attempt with RESOURCE_EXHAUSTED (BackupService.6560), not as a
    transient I/O error, and the disk is rolled back to what it was."""
    with small_file_system(services.infra.base / "pool" / caller.project_id, 12 * MIB) as folder:
        disk = await create_disk(caller, "tight", 16 * MIB)
        fill(disk.path, 0, 8, seed=81)
        vault = await create_vault(caller, "tight", DISK, BACKUP, resources=[ref(disk)])
        backup = await backup_now(caller, vault.vault_id)
        os.truncate(disk.path, 0)
        os.truncate(disk.path, 16 * MIB)
        fill(disk.path, 0, 1, seed=82)  # the disk holds 1 MiB now
        before = sha256_file(disk.path)
        with open(folder / "filler", "wb") as filler:
            filler.write(bytes(8 * MIB))  # 3 MiB left: room for the restore point's 1 MiB, not for 7 MiB more
        task = await wait_task(caller, await restore(caller, backup.backup_id))
        assert task.status == tp.TASK_STATUS_FAILED and task.error.code == "BackupService.6560"
        assert "no room" in task.error.message and task.extra_info["attempts"] == "1"
        assert sha256_file(disk.path) == before
        assert await disk_status(caller, disk.resource_id) == AVAILABLE
        assert restore_points(services, caller) == []


class NoRestorePoints(LocalProvider):
    """A provider that cannot roll a disk back (as a block device without snapshots)."""

    async def restore_point(self, project_id, disk_id, restore_id, force=False):
        return None


async def test_without_a_restore_point_a_failed_restore_leaves_the_disk_error(services, caller):
    disk, good, damaged, before = await backup_with_a_corrupt_late_chunk(services, caller, "no-rollback")
    async with without_shared_workers(services):
        worker = await services.start_worker()
        worker.resources.provider = NoRestorePoints(services.infra.base / "pool", services.infra.base / "fs")
        task = await wait_task(caller, await restore(caller, damaged.backup_id))
        assert task.status == tp.TASK_STATUS_FAILED and task.error.code == "BackupService.6582"
        assert sha256_file(disk.path) != before  # half written: nothing to go back to ...
        assert await disk_status(caller, disk.resource_id) == ERROR  # ... and it says so

        # A restore that completes makes the disk whole, and available, again.
        done = await wait_success(caller, await restore(caller, good.backup_id))
        assert await disk_status(caller, disk.resource_id) == AVAILABLE
        assert int(done.extra_info["written_bytes"]) > 0



async def test_a_worker_killed_mid_restore_leaves_the_disk_restoring_until_a_retry_completes_it(services, caller):
    disk = await create_disk(caller, "kill9-restore", 48 * MIB)
    fill(disk.path, 0, 40, seed=61)
    image = sha256_file(disk.path)
    vault = await create_vault(caller, "kill9-restore", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    fill(disk.path, 0, 40, seed=62)
    before = sha256_file(disk.path)
    async with without_shared_workers(services):
        # Slow enough that it is still writing when killed, even if its set-up ran unpaced on a busy machine.
        with worker_processes(services, 1, CBR_RATE_LIMIT_MBPS=2) as (slow,):
            task_id = await restore(caller, backup.backup_id)
            await running_with_progress(caller, task_id)
            os.kill(slow.pid, signal.SIGKILL)
            slow.wait(10)
        assert sha256_file(disk.path) not in (before, image)  # half restored
        for _ in range(10):  # nobody runs the job until its lease ends: the disk says what it is
            assert await disk_status(caller, disk.resource_id) == RESTORING
            await asyncio.sleep(0.1)
        with worker_processes(services, 1) as (fresh,):
            task = await wait_success(caller, task_id, timeout=60)
        assert is_worker_of(task.extra_info["worker"], fresh.pid)
        assert task.extra_info["attempts"] == "2"
    assert await disk_status(caller, disk.resource_id) == AVAILABLE
    assert sha256_file(disk.path) == image
    assert restore_points(services, caller) == []


async def test_an_in_place_restore_reports_the_bytes_it_wrote(services, caller):
    """Blocks written where the backup has holes are zeroed again by the restore: that is writing them, so the
    task and the RestoreCompleted event count them (they said 0 bytes)."""
    from cbr.events.v1 import backup_events_pb2 as ev
    from tests.support.services import eventually
    disk = await create_disk(caller, "honest", 8 * MIB)
    fill(disk.path, 0, 1, seed=71)
    vault = await create_vault(caller, "honest", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    image = sha256_file(disk.path)
    fill(disk.path, 4, 2, seed=72)  # 2 MiB where the backup has a hole
    fill(disk.path, 0, 1, seed=73)  # and the 1 MiB it has data for, different now
    events: list = []

    async def on_completed(msg):
        events.append(ev.RestoreCompleted.FromString(msg.data))
    subscription = await services.runtimes["backup"].nats.subscribe("cbr.restore.completed", cb=on_completed)
    try:
        task_id = await restore(caller, backup.backup_id)
        done = await wait_success(caller, task_id)

        async def published():
            return [e for e in events if e.task_id == task_id]
        (event,) = await eventually(published)
    finally:
        await subscription.unsubscribe()
    assert sha256_file(disk.path) == image
    assert done.extra_info["written_bytes"] == str(3 * MIB)
    assert event.written_bytes == 3 * MIB
