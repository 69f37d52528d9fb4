"""Faults of the chunk store: a store whose file system is full fails the backup at once (RESOURCE_EXHAUSTED,
BackupService.6762, never retried) and GC reclaims what it wrote; temp files of puts cut off by a crash are
removed at worker start and by GC, but never a young one that may belong to a running put."""
from __future__ import annotations

import os
import time

import pytest

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr_backup.chunkstore import FsChunkStore, StoreFullError
from cbr_common.grpc_errors import status_code_for
from tests.support.backups import (backup_now, checkpoint, disk_in_vault, fill, get_backup, wait_success,
                                   wait_task)
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.mounts import small_file_system
from tests.support.packs import chunk_objects
from tests.support.services import eventually
from tests.support.workers import without_shared_workers

STORE_SIZE = 6 * MIB


def chunk_files(store_root, vault_id: str) -> set[str]:
    return chunk_objects(FsChunkStore(store_root), vault_id)


@pytest.fixture
async def small_store(services, tmp_path):
    """The only worker has its chunk store on a 6 MiB file system of its own."""
    async with without_shared_workers(services):
        with small_file_system(tmp_path / "store", STORE_SIZE) as root:
            await services.start_worker(store_dir=str(root))
            yield root
            await services.stop_workers()


async def test_a_full_store_fails_the_backup_at_once_and_gc_reclaims_what_it_wrote(caller, small_store):
    disk = await create_disk(caller, "big", 24 * MIB)
    fill(disk.path, 0, 1, seed=31)
    vault = await create_vault(caller, "full-store", DISK, BACKUP, resources=[ref(disk)])
    first = await backup_now(caller, vault.vault_id)
    kept = chunk_files(small_store, vault.vault_id)
    assert len(kept) == 1  # 1 MiB of 128 KiB blocks, in one pack

    fill(disk.path, 1, 16, seed=32)  # 16 MiB more: cannot fit in what is left of 6 MiB
    cp = await checkpoint(caller, vault.vault_id)
    task = await wait_task(caller, cp.resources[0].task_id, timeout=60)
    assert task.status == tp.TASK_STATUS_FAILED
    assert task.error.code == "BackupService.6762"
    assert "chunk store is full" in task.error.message and "No space left on device" in task.error.message
    assert task.extra_info["attempts"] == "1"  # not retried as if the moment were to blame
    assert status_code_for(StoreFullError("x")).name == "RESOURCE_EXHAUSTED"
    failed = await get_backup(caller, cp.resources[0].backup_id)
    assert failed.status == bp.BACKUP_STATUS_ERROR
    written = chunk_files(small_store, vault.vault_id)
    assert written >= kept  # packs of the failed backup, if any were put: nothing refers to them
    assert not [p for p in small_store.rglob("*") if ".tmp-" in p.name]

    gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id, grace_seconds=0))
    done = await wait_success(caller, gc.task_id)
    assert done.extra_info["exclusive"] == "true"
    assert int(done.extra_info["packs_deleted"]) == len(written) - len(kept)
    assert chunk_files(small_store, vault.vault_id) == kept  # the available backup keeps every chunk
    assert (await get_backup(caller, first.backup_id)).status == bp.BACKUP_STATUS_AVAILABLE


def plant_temp_file(store: FsChunkStore, key: str, age_s: float):
    final = store.path_for(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f"{final.name}.tmp-{os.urandom(16).hex()}")
    temp.write_bytes(b"a put cut off by kill -9")
    then = time.time() - age_s
    os.utime(temp, (then, then))
    return temp


async def test_stale_temp_files_go_at_worker_start_and_at_gc(services, caller):
    disk, vault = await disk_in_vault(caller, 2 * MIB, seed=33)
    await backup_now(caller, vault.vault_id)
    store = FsChunkStore(services.infra.base / "store")
    chunk = f"{vault.vault_id}/chunks/{'ee' * 32}"

    async with without_shared_workers(services):
        stale, young = plant_temp_file(store, chunk, 2 * 3600), plant_temp_file(store, chunk, 5)
        await services.start_worker()

        async def stale_removed():
            return not stale.exists()
        await eventually(stale_removed)
        assert young.exists()  # as if another worker's put were writing it right now

        stale = plant_temp_file(store, chunk, 2 * 3600)
        gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id,
                                                                          grace_seconds=0))
        done = await wait_success(caller, gc.task_id)
        assert done.extra_info["temp_files_deleted"] == "1"
        assert not stale.exists() and young.exists()
        young.unlink()
