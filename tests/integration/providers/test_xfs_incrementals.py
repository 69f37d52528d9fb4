"""Change-tracked incrementals through the gRPC services on an XFS-backed pool (a loop mount the session makes).

The stack (conftest.xfs_services) keeps its pool on the XFS mount, so backup snapshots are reflink clones and
the disk's last backed-up snapshot is kept as its change base (DESIGN.md 14).
"""
from __future__ import annotations

from bench.workload import CHANGE_BLOCK, mutate
from cbr.backup.v1 import backup_pb2 as bp
from tests.support.backups import disk_path, fill, new_disk_from, sha256_file, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
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
