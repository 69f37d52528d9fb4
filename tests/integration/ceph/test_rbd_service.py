"""Disks on Ceph RBD through the gRPC services and real workers (CBR_PROVIDER=ceph, conftest.rbd_stack): a disk's
incremental chain reads only what diff_iterate reports and restores byte-exact, to new disks and in place; a
two-disk server backs up at one instant; an image a running client writes is not restored in place; a kill -9
mid-backup leaves no snapshot behind once the retry finishes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr_backup.datapath.disk_backup import DEFAULT_BLOCK_SIZE
from tests.support.backups import checkpoint, new_disk_from, running_with_progress, wait_success, wait_task
from cbr.backup.v1 import protectable_pb2 as pp
from tests.support.calls import BACKUP, DISK, MIB, SERVER, create_disk, create_vault, expect_error, ref
from tests.support.pool_snapshots import backup_of
from tests.support.services import eventually

BLOCK = DEFAULT_BLOCK_SIZE  # the backup's block: a changed byte costs at most its whole block


def diff_blocks_bytes(stack, project_id: str, name: str, base_backup_id: str) -> int:
    """What diff_iterate reports changed on the image since the backup's anchor, rounded out to blocks."""
    blocks = set()
    with stack.image(project_id, name, read_only=True) as image:
        def add(offset, length, exists):
            blocks.update(range(offset // BLOCK, -(-(offset + length) // BLOCK)))
        image.diff_iterate(0, image.size(), f"cbr-{base_backup_id}", add)
    return len(blocks) * BLOCK


async def create_server(caller, name: str, disks: int = 2, size: int = 8 * MIB):
    ids = [(await create_disk(caller, f"{name}-disk{i}", size)).resource_id for i in range(disks)]
    return (await caller.protectables.DefineServer(pp.DefineServerRequest(name=name, disk_ids=ids))).server


async def settled(stack, project_id: str, name: str, backup_ids: list[str]) -> None:
    """The image's CBR snapshots are exactly the anchors of these backups (a job releases older ones just after
    its task succeeds) and no CBR group is left."""
    async def check():
        assert stack.snapshots(project_id, name) == sorted(f"cbr-{b}" for b in backup_ids)
        assert stack.groups(project_id) == []
        return True
    await eventually(check, timeout=20)


async def restore_in_place(caller, backup_id: str, **fields) -> tp.Task:
    task_id = (await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup_id, **fields))).task_id
    return await wait_task(caller, task_id, timeout=120)


async def test_a_disk_chain_reads_what_diff_iterate_reports_and_restores_byte_exact(rbd_stack, rbd_caller,
                                                                                      rbd_worker, capsys):
    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    disk = await create_disk(caller, "rbd-disk", 64 * MIB)
    name = disk.resource_id  # the image is named by the disk id
    assert disk.path.startswith("rbd:")
    for offset, seed in ((0, 1), (20, 2), (50, 3)):
        stack.fill(project, name, offset * MIB, 6 * MIB, seed)
    images = [stack.sha256(project, name)]
    vault = await create_vault(caller, "rbd", DISK, BACKUP, resources=[ref(disk)])

    full, info = await backup_of(caller, vault.vault_id)
    # The objects that hold data (diff_iterate reports an object's extent from its start), not the holes.
    assert not full.incremental and 18 * MIB <= int(info["read_bytes"]) <= 24 * MIB
    await settled(stack, project, name, [full.backup_id])  # its anchor is the change base
    backups = [full]
    for step, writes in enumerate((((5 * MIB, MIB), (40 * MIB, MIB)), ((21 * MIB + 4096, 8192),))):
        for offset, length in writes:  # inside data, into a hole; then a few KiB
            stack.fill(project, name, offset, length, seed=10 + step)
        reported = diff_blocks_bytes(stack, project, name, backups[-1].backup_id)
        images.append(stack.sha256(project, name))
        backup, info = await backup_of(caller, vault.vault_id)
        assert backup.incremental and info["base_backup_id"] == backups[-1].backup_id
        assert 0 < int(info["read_bytes"]) <= reported, (info["read_bytes"], reported)
        with capsys.disabled():
            written = sum(length for _, length in writes)
            print(f"\n[measured] RBD incremental {step + 1}: wrote {written} B, diff_iterate (in blocks) {reported} B,"
                  f" read {info['read_bytes']} B ({int(info['read_bytes']) / written:.1f}x the written bytes)")
        await settled(stack, project, name, [backup.backup_id])  # the older anchor went
        backups.append(backup)

    for backup, image in zip(backups, images):  # every link of the chain to a new disk
        restored = await new_disk_from(caller, backup.backup_id)
        assert stack.sha256(project, restored) == image
    task = await restore_in_place(caller, full.backup_id)  # in place: only the blocks that differ
    assert task.status == tp.TASK_STATUS_SUCCESS, task.error
    assert stack.sha256(project, name) == images[0]
    assert int(task.extra_info["written_bytes"]) <= 3 * MIB  # the changed blocks, not the disk
    assert stack.snapshots(project, name) == [f"cbr-{backups[-1].backup_id}"]  # the restore point went


async def test_an_image_a_running_client_writes_is_not_restored_in_place(rbd_stack, rbd_caller, rbd_worker):
    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    disk = await create_disk(caller, "busy", 16 * MIB)
    stack.fill(project, disk.resource_id, 0, 4 * MIB, seed=20)
    vault = await create_vault(caller, "busy", DISK, BACKUP, resources=[ref(disk)])
    full_sha = stack.sha256(project, disk.resource_id)
    full, _ = await backup_of(caller, vault.vault_id)
    stack.fill(project, disk.resource_id, 0, MIB, seed=21)
    now = stack.sha256(project, disk.resource_id)
    with stack.image(project, disk.resource_id) as vm:
        vm.write(b"\x01" * 4096, 8 * MIB)  # a running client: its first write takes the exclusive lock
        # Refused by the call itself, before any task exists.
        refused = await expect_error(restore_in_place(caller, full.backup_id), grpc.StatusCode.FAILED_PRECONDITION,
                                     "BackupService.7003")
        assert "in use" in refused.details() and "force" in refused.details()
        assert stack.sha256(project, disk.resource_id) != now  # only the client's own write changed it
        assert [s for s in stack.snapshots(project, disk.resource_id) if "restore" in s] == []

        # The caller may insist: the image then holds the backup again, lock or not.
        task = await restore_in_place(caller, full.backup_id, force=True)
        assert task.status == tp.TASK_STATUS_SUCCESS, task.error
    assert stack.sha256(project, disk.resource_id) == full_sha
    assert [s for s in stack.snapshots(project, disk.resource_id) if "restore" in s] == []


async def test_a_two_disk_server_backs_up_at_one_instant_and_restores_byte_exact(rbd_stack, rbd_caller, rbd_worker):
    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    server = await create_server(caller, "pair", disks=2)
    names = [d.disk_id for d in server.disks]
    for i, name in enumerate(names):
        stack.fill(project, name, 0, 6 * MIB, seed=30 + i)
    images = [stack.sha256(project, n) for n in names]
    vault = await create_vault(caller, "pair", SERVER, BACKUP, resources=[ref(server)])
    full, _ = await backup_of(caller, vault.vault_id)
    for child in full.children:
        await settled(stack, project, child.resource_id, [child.backup_id])  # the group went after the reads

    stack.fill(project, names[1], 2 * MIB, MIB, seed=40)  # one MiB of the second disk
    changed = [stack.sha256(project, n) for n in names]
    step, info = await backup_of(caller, vault.vault_id)
    assert step.incremental and 0 < int(info["read_bytes"]) <= MIB
    for child in step.children:
        await settled(stack, project, child.resource_id, [child.backup_id])

    by_disk = {c.resource_id: c.backup_id for c in step.children}
    for name, image in zip(names, changed):
        assert stack.sha256(project, await new_disk_from(caller, by_disk[name])) == image
    mappings = [bp.RestoreMapping(backup_id=c.backup_id, volume_id=c.resource_id) for c in full.children]
    task = await restore_in_place(caller, full.backup_id, mappings=mappings)
    assert task.status == tp.TASK_STATUS_SUCCESS, task.error
    assert [stack.sha256(project, n) for n in names] == images


async def test_a_killed_worker_leaves_no_snapshot_once_the_retry_finished(rbd_stack, rbd_caller):
    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    server = await create_server(caller, "kill9", disks=2, size=32 * MIB)
    names = [d.disk_id for d in server.disks]
    for i, name in enumerate(names):
        stack.fill(project, name, 0, 24 * MIB, seed=50 + i)
    images = [stack.sha256(project, n) for n in names]
    vault = await create_vault(caller, "kill9", SERVER, BACKUP, resources=[ref(server)])
    victim = subprocess.Popen([sys.executable, "-m", "cbr_backup.worker"],
                              env=stack.worker_env(CBR_RATE_LIMIT_MBPS=8), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        await running_with_progress(caller, task_id, timeout=120)
        assert stack.groups(project) != []  # mid-read of the set's group snapshot
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        await stack.start_worker()  # the retry
        task = await wait_success(caller, task_id, timeout=180)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    try:
        assert task.extra_info["attempts"] == "2"
        backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=backup_id))).backup
        for child in backup.children:  # only the anchors that are now the bases; no group
            await settled(stack, project, child.resource_id, [child.backup_id])
        by_disk = {c.resource_id: c.backup_id for c in backup.children}
        for name, image in zip(names, images):
            assert stack.sha256(project, await new_disk_from(caller, by_disk[name])) == image
    finally:
        await stack.services.stop_workers()


async def test_an_operators_existing_image_is_imported_listed_backed_up_and_restored(rbd_stack, rbd_caller,
                                                                                       rbd_worker):
    import rbd

    from cbr_backup.adapters.tables import metadata
    from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
    from cbr_backup.providers.rbd import RbdProvider
    from cbr_backup.providers.rbd_images import RbdImages
    from cbr_backup.providers.rbd_import import import_images
    from cbr_common.db import Database

    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    handle = stack.ceph.rados()  # the project's namespace and the operator's volume, there before CBR
    try:
        with handle.open_ioctx(stack.ceph.pool) as pool:
            rbd.RBD().namespace_create(pool, stack.namespace_template.format(project=project))
    finally:
        handle.shutdown()
    with stack.ioctx(project) as ioctx:
        rbd.RBD().create(ioctx, "vm-root", 12 * MIB)
    stack.fill(project, "vm-root", 0, 5 * MIB, seed=60)
    image = stack.sha256(project, "vm-root")

    db = Database(stack.services.infra.postgres.url, metadata.schema, pool_size=2)
    provider = RbdProvider(RbdImages(stack.ceph.conf_path, pool=stack.ceph.pool,
                                     namespace=stack.namespace_template))
    try:
        added = await import_images(provider, lambda: BackupUnitOfWork(db), project)
        assert [(d.name, d.size_bytes) for d in added] == [("vm-root", 12 * MIB)]
        assert await import_images(provider, lambda: BackupUnitOfWork(db), project) == []  # once only
    finally:
        provider.close()
        await db.close()
    listed = await caller.protectables.ListProtectables(pp.ListProtectablesRequest(type=DISK))
    disk = next(p for p in listed.protectables if p.name == "vm-root")
    assert disk.resource_id == added[0].disk_id and disk.path.endswith("/vm-root")

    vault = await create_vault(caller, "imported", DISK, BACKUP, resources=[ref(disk)])
    full, _ = await backup_of(caller, vault.vault_id)
    assert stack.snapshots(project, "vm-root") == [f"cbr-{full.backup_id}"]  # on the operator's image
    stack.fill(project, "vm-root", 8 * MIB, MIB, seed=61)
    step, info = await backup_of(caller, vault.vault_id)
    assert step.incremental and 0 < int(info["read_bytes"]) <= MIB
    assert stack.sha256(project, await new_disk_from(caller, full.backup_id)) == image
    task = await restore_in_place(caller, full.backup_id)
    assert task.status == tp.TASK_STATUS_SUCCESS, task.error
    assert stack.sha256(project, "vm-root") == image


async def test_a_cancelled_server_backup_leaves_only_the_bases(rbd_stack, rbd_caller):
    stack, caller = rbd_stack, rbd_caller
    project = caller.project_id
    server = await create_server(caller, "cancelled", disks=2, size=32 * MIB)
    names = [d.disk_id for d in server.disks]
    for i, name in enumerate(names):
        stack.fill(project, name, 0, 4 * MIB, seed=70 + i)
    vault = await create_vault(caller, "cancelled", SERVER, BACKUP, resources=[ref(server)])
    await stack.start_worker()
    try:
        base, _ = await backup_of(caller, vault.vault_id)
    finally:
        await stack.services.stop_workers()
    for name in names:  # 24 MiB to read per disk: long enough at 2 MB/s to cancel it
        stack.fill(project, name, 4 * MIB, 24 * MIB, seed=80)
    await stack.start_worker(rate_limit_mbps=2)
    try:
        cp = await checkpoint(caller, vault.vault_id)
        await running_with_progress(caller, cp.resources[0].task_id, timeout=120)
        assert stack.groups(project) != []  # the set's group snapshot is being read
        await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=cp.resources[0].task_id))
        task = await wait_task(caller, cp.resources[0].task_id)
        assert task.status == tp.TASK_STATUS_CANCELLED
    finally:
        await stack.services.stop_workers()
    for child in base.children:  # the job's anchors and group went; the bases stay
        await settled(stack, project, child.resource_id, [child.backup_id])
