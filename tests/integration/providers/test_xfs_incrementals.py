"""Change-tracked incrementals through the gRPC services on an XFS-backed pool (a loop mount the session makes).

The stack here is a private one (its own Postgres, NATS, services and worker) whose pool, file systems and
store live on the XFS mount, so that backup snapshots are reflink clones and the disk's last backed-up snapshot
is kept as its change base (DESIGN.md 14).
"""
from __future__ import annotations

import dataclasses

import pytest

from bench.workload import CHANGE_BLOCK, mutate
from cbr.backup.v1 import backup_pb2 as bp
from cbr_backup.providers.local import LocalProvider
from tests.support.backups import checkpoint, disk_path, fill, new_disk_from, sha256_file, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.services import Services
from tests.support.stack import Infra

GIB = 1024 * MIB
DATA_MIB = 256  # real data on the 2 GiB disk, in four places with holes between
FILLED = (0, 600, 1200, 1900)  # MiB offsets of the four places


def in_data(block: int) -> bool:
    offset = block * CHANGE_BLOCK
    return any(start * MIB <= offset < (start + DATA_MIB // 4) * MIB for start in FILLED)


@pytest.fixture(scope="module")
async def xfs_services(xfs_mount):
    infra = Infra.start()
    base = xfs_mount / "stack"
    base.mkdir()
    services = await Services.start(dataclasses.replace(infra, base=base))
    yield services
    await services.stop()
    infra.stop()


def snapshots_of(services, project_id: str, disk_id: str) -> list[str]:
    """The disk's snapshots the pool holds (read beside the services, as an operator would look)."""
    provider = LocalProvider(services.infra.base / "pool", services.infra.base / "fs")
    return provider._snapshot_names(project_id, disk_id)


async def backup_of(caller, vault_id: str) -> tuple[bp.Backup, dict]:
    cp = await checkpoint(caller, vault_id)
    task = await wait_success(caller, cp.resources[0].task_id, timeout=600)
    backup = (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=cp.resources[0].backup_id))).backup
    return backup, dict(task.extra_info)


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
    assert snapshots_of(services, caller.project_id, disk.resource_id) == [full.backup_id]  # its change base

    same, info = await backup_of(caller, vault.vault_id)
    assert same.incremental and info["base_backup_id"] == full.backup_id
    assert int(info["read_bytes"]) < DATA_MIB * MIB // 100  # under 1% of the data: nothing changed
    assert int(info["retained_snapshot_bytes"]) < MIB  # the base shared every block with the disk
    assert snapshots_of(services, caller.project_id, disk.resource_id) == [same.backup_id]  # the old base went

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
    assert snapshots_of(services, caller.project_id, disk.resource_id) == [step.backup_id]

    # Byte-exact: the incremental to a new disk, and the full one back in place over the changed disk.
    restored = await disk_path(caller, await new_disk_from(caller, step.backup_id))
    assert sha256_file(restored) == changed_image
    task_id = (await caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=full.backup_id))).task_id
    await wait_success(caller, task_id, timeout=600)
    assert sha256_file(disk.path) == original
