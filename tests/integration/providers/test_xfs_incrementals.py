"""Change-tracked incrementals through the gRPC services on an XFS-backed pool (a loop mount the session makes).

The stack (conftest.xfs_services) keeps its pool on the XFS mount, so backup snapshots are reflink clones and
the disk's last backed-up snapshot is kept as its change base (DESIGN.md 16).
"""
from __future__ import annotations

from bench.workload import CHANGE_BLOCK, mutate
from cbr.backup.v1 import backup_pb2 as bp
from tests.support.backups import disk_path, fill, new_disk_from, sha256_file, wait_success
from tests.support.calls import BACKUP, DISK, MIB, SERVER, create_disk, create_server, create_vault, ref
from tests.support.pool_snapshots import backup_of, settled_snapshots

GIB = 1024 * MIB
DATA_MIB = 256  # real data on the 2 GiB disk, in four places with holes between
FILLED = (0, 600, 1200, 1900)  # MiB offsets of the four places


def in_data(block: int) -> bool:
    offset = block * CHANGE_BLOCK
    return any(start * MIB <= offset < (start + DATA_MIB // 4) * MIB for start in FILLED)


async def test_an_unchanged_disk_reads_nothing_and_a_one_percent_change_reads_what_changed(xfs_services):
    services = xfs_services
    caller = services.caller()
    disk = await create_disk(caller, "tracked", 2 * GIB)
    for i, offset in enumerate(FILLED):
        fill(disk.path, offset, DATA_MIB // 4, seed=100 + i)
    original = sha256_file(disk.path)
    vault = await create_vault(caller, "tracked", DISK, BACKUP, resources=[ref(disk)])

    full, info = await backup_of(caller, vault.vault_id)
    assert not full.incremental and int(info["read_bytes"]) >= DATA_MIB * MIB
    await settled_snapshots(services, caller.project_id, disk.resource_id, [full.backup_id])  # its change base

    same, info = await backup_of(caller, vault.vault_id)
    assert same.incremental and info["base_backup_id"] == full.backup_id
    assert int(info["read_bytes"]) < DATA_MIB * MIB // 100  # under 1% of the data: nothing changed
    assert int(info["retained_snapshot_bytes"]) < MIB  # the base shared every block with the disk
    await settled_snapshots(services, caller.project_id, disk.resource_id, [same.backup_id])  # the old base went

    blocks = mutate(disk.path, 1.0, seed=7)  # the standard 1% change step: 64 KiB blocks, some into holes
    changed_bytes = len(blocks) * CHANGE_BLOCK
    overwritten = sum(CHANGE_BLOCK for block in blocks if in_data(block))
    changed_image = sha256_file(disk.path)
    step, info = await backup_of(caller, vault.vault_id)
    assert step.incremental and info["base_backup_id"] == same.backup_id
    assert 0 < int(info["read_bytes"]) <= 3 * changed_bytes, (info["read_bytes"], changed_bytes)
    # What keeping the base cost the pool: the blocks of its data the step rewrote (a write into a hole costs
    # the base nothing).
    assert overwritten <= int(info["retained_snapshot_bytes"]) <= overwritten + MIB, (overwritten, info)
    await settled_snapshots(services, caller.project_id, disk.resource_id, [step.backup_id])

    # Byte-exact: the incremental to a new disk, and the full one back in place over the changed disk.
    restored = await disk_path(caller, await new_disk_from(caller, step.backup_id))
    assert sha256_file(restored) == changed_image
    task_id = (await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=full.backup_id))).task_id
    await wait_success(caller, task_id, timeout=600)
    assert sha256_file(disk.path) == original


async def test_a_two_disk_server_is_one_instant_and_its_incremental_reads_only_the_changed_disk(xfs_services):
    services = xfs_services
    caller = services.caller()
    server = await create_server(caller, "pair", disks=2)
    paths = [await disk_path(caller, d.disk_id) for d in server.disks]
    for i, path in enumerate(paths):
        fill(path, 0, 6, seed=300 + i)
    images = [sha256_file(p) for p in paths]
    vault = await create_vault(caller, "pair", SERVER, BACKUP, resources=[ref(server)])
    full, _ = await backup_of(caller, vault.vault_id)
    for child in full.children:
        await settled_snapshots(services, caller.project_id, child.resource_id, [child.backup_id])

    fill(paths[1], 2, 1, seed=310)  # one MiB of the second disk
    changed = [sha256_file(p) for p in paths]
    step, info = await backup_of(caller, vault.vault_id)
    assert step.incremental and int(info["read_bytes"]) <= 2 * MIB
    for child in step.children:
        await settled_snapshots(services, caller.project_id, child.resource_id, [child.backup_id])

    by_disk = {c.resource_id: c.backup_id for c in step.children}
    for d, image in zip(server.disks, changed):
        assert sha256_file(await disk_path(caller, await new_disk_from(caller, by_disk[d.disk_id]))) == image
    mappings = [bp.RestoreMapping(backup_id=c.backup_id, volume_id=c.resource_id) for c in full.children]
    task_id = (await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=full.backup_id,
                                                                          mappings=mappings))).task_id
    await wait_success(caller, task_id, timeout=120)
    assert [sha256_file(p) for p in paths] == images
