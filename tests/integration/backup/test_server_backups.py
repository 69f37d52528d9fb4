"""Server backups: one instant for all the server's disks (minus excluded ones), one parent backup with a child
per disk, restored disk by disk through mappings or into new disks."""
from __future__ import annotations

import asyncio
import fcntl
import struct
import threading

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.backups import (backup_now, disk_path, get_backup, new_disk_from, sha256_file, wait_success,
                                   write_disk)
from tests.support.calls import BACKUP, MIB, SERVER, create_disk, create_server, create_vault, expect_error, ref

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _paths(server) -> list[str]:
    return [d.path for d in server.disks] if server.disks[0].path else []


async def _server_with_data(caller, name: str, disks: int = 2):
    server = await create_server(caller, name, disks=disks)
    paths = [await disk_path(caller, d.disk_id) for d in server.disks]
    for i, path in enumerate(paths):
        write_disk(path, seed=100 + i)
    return server, paths


async def test_server_round_trip_with_mappings_and_new_disks(caller):
    server, paths = await _server_with_data(caller, "web")
    images = [sha256_file(p) for p in paths]
    vault = await create_vault(caller, "servers", SERVER, BACKUP, resources=[ref(server)])
    backup = await backup_now(caller, vault.vault_id)
    assert backup.resource_type == SERVER and len(backup.children) == 2
    children = {c.resource_id: c for c in backup.children}
    assert set(children) == {d.disk_id for d in server.disks}
    assert all(c.status == bp.BACKUP_STATUS_AVAILABLE for c in backup.children)
    assert backup.logical_bytes == sum(c.logical_bytes for c in backup.children)
    child = await get_backup(caller, backup.children[0].backup_id)
    assert child.parent_id == backup.backup_id and child.device in ("vda", "vdb")

    for i, path in enumerate(paths):
        write_disk(path, seed=200 + i, chunks=2)
    mappings = [bp.RestoreMapping(backup_id=children[d.disk_id].backup_id, volume_id=d.disk_id)
                for d in server.disks]
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id,
                                                                       mappings=mappings))
    await wait_success(caller, reply.task_id)
    assert [sha256_file(p) for p in paths] == images

    # One disk of the server backup becomes a new disk.
    new_id = await new_disk_from(caller, children[server.disks[1].disk_id].backup_id)
    assert sha256_file(await disk_path(caller, new_id)) == images[1]

    # Bad restore requests answer INVALID_ARGUMENT and change nothing.
    other = await create_disk(caller, "stranger", 8 * MIB)
    bad = [
        [],  # mappings are required
        [bp.RestoreMapping(backup_id=mappings[0].backup_id, volume_id=other.resource_id)],  # not the server's disk
        [mappings[0], bp.RestoreMapping(backup_id=mappings[0].backup_id, volume_id=mappings[1].volume_id)],
    ]
    for wrong in bad:
        await expect_error(caller.backups.RestoreBackup(bp.RestoreBackupRequest(
            backup_id=backup.backup_id, mappings=wrong)), INVALID, "BackupService.6704")
    await expect_error(caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=child.backup_id)),
                       INVALID, "BackupService.6704")
    await expect_error(caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=child.backup_id)),
                       grpc.StatusCode.FAILED_PRECONDITION, "BackupService.6734")

    deleted = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup.backup_id))
    await wait_success(caller, deleted.task_id)
    await expect_error(caller.backups.GetBackup(bp.GetBackupRequest(backup_id=child.backup_id)),
                       grpc.StatusCode.NOT_FOUND)


async def test_excluded_disks_are_left_out(caller):
    server, paths = await _server_with_data(caller, "db", disks=3)
    excluded = server.disks[2].disk_id
    vault = await create_vault(caller, "db-vault", SERVER, BACKUP,
                               resources=[ref(server, exclude_volumes=[excluded])])
    backup = await backup_now(caller, vault.vault_id)
    assert {c.resource_id for c in backup.children} == {server.disks[0].disk_id, server.disks[1].disk_id}
    # ... and a checkpoint can leave out more, for this run only.
    reply = await caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(
        vault_id=vault.vault_id, resource_details=[bp.ResourceDetail(
            resource_id=server.resource_id, exclude_volumes=[server.disks[0].disk_id])]))
    await wait_success(caller, reply.checkpoint.resources[0].task_id)
    second = await get_backup(caller, reply.checkpoint.resources[0].backup_id)
    assert [c.resource_id for c in second.children] == [server.disks[1].disk_id]


async def test_all_disks_are_taken_at_one_instant(caller):
    """A writer keeps stamping the same counter on both disks (holding each disk's writer lock as a hypervisor
    would); the backup must see one instant: both disks carry the same counter."""
    server, paths = await _server_with_data(caller, "pair")
    vault = await create_vault(caller, "pair", SERVER, BACKUP, resources=[ref(server)])
    stop = threading.Event()

    def stamp():
        files = [open(p, "r+b") for p in sorted(paths)]
        try:
            n = 0
            while not stop.is_set():
                n += 1
                for f in files:
                    fcntl.flock(f, fcntl.LOCK_SH)
                for f in files:
                    f.seek(0)
                    f.write(struct.pack("<Q", n) * 512)
                    f.flush()
                for f in files:
                    fcntl.flock(f, fcntl.LOCK_UN)
        finally:
            for f in files:
                f.close()

    writer = threading.Thread(target=stamp, daemon=True)
    writer.start()
    try:
        await asyncio.sleep(0.2)
        backup = await backup_now(caller, vault.vault_id)
    finally:
        stop.set()
        writer.join(10)
    stamps = []
    for child in backup.children:
        with open(await disk_path(caller, await new_disk_from(caller, child.backup_id)), "rb") as f:
            stamps.append(struct.unpack("<Q", f.read(8))[0])
    assert stamps[0] == stamps[1] > 0


async def test_vault_of_wrong_type_is_refused_by_the_vault(caller):
    """The vault service keeps server vaults to servers; checked here because server backups rely on it."""
    disk = await create_disk(caller, "lonely", 2 * MIB)
    await expect_error(caller.vault.CreateVault(vp.CreateVaultRequest(
        name="x", object_type=SERVER, protect_type=BACKUP, size_gb=10, resources=[ref(disk)])), INVALID)
