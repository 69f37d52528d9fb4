"""Verify and GC as jobs through gRPC: a flipped byte and a missing chunk are found, the backups needing them
marked, and restoring them fails with DATA_LOSS without writing wrong bytes; a patched block whose base and patch
do not make it is found too; GC frees what nothing uses."""
from __future__ import annotations

import os

import grpc
import psycopg

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath import load_manifest
from cbr_backup.datapath.chunk_codec import ChunkCodec
from cbr_backup.datapath.disk_backup import DEFAULT_BLOCK_SIZE, manifest_key
from cbr_backup.datapath.manifest import DiskManifest
from cbr_backup.keys import KeyFileProvider, unwrap_vault_keys
from cbr_backup.keys.vault_keys import WrappedVaultKeys
from tests.support.backups import (backup_now, disk_in_vault, disk_path, get_backup, sha256_file, wait_success,
                                   wait_task, write_disk)
from tests.support.calls import MIB, expect_error
from tests.support.packs import chunk_objects, flip_pack_byte
from tests.support.services import eventually, kek_file

BLOCK = DEFAULT_BLOCK_SIZE


def _chunk_files(services, vault_id: str) -> list:
    store = FsChunkStore(services.infra.base / "store")
    return sorted(store.path_for(key) for key in chunk_objects(store, vault_id))


async def test_verify_marks_damaged_backups_and_restore_refuses_them(services, caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=21)
    image = sha256_file(disk.path)
    backup = await backup_now(caller, vault.vault_id)
    files = _chunk_files(services, vault.vault_id)
    assert len(files) == 1  # one pack
    flip_pack_byte(files[0], 10)   # its first chunk
    flip_pack_byte(files[0], -10)  # its last

    # Before verify knows, a restore finds the damage itself: the task fails with a data-loss code and the new
    # disk holds no wrong bytes (every block it has is the original's, or was never written).
    reply = await caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
        backup_id=backup.backup_id, name="attempt"))
    task = await wait_task(caller, reply.task_id)
    assert task.status == tp.TASK_STATUS_FAILED and task.error.code in ("BackupService.6581", "BackupService.6582")
    with open(disk.path, "rb") as original, open(await disk_path(caller, reply.disk_id), "rb") as restored:
        while block := original.read(BLOCK):
            got = restored.read(BLOCK)
            assert got in (block, bytes(len(got))), "the failed restore wrote bytes the backup never had"
    assert (await get_backup(caller, backup.backup_id)).status == bp.BACKUP_STATUS_AVAILABLE

    verify = await caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault.vault_id))
    done = await wait_success(caller, verify.task_id)
    assert done.operation_type == tp.OPERATION_TYPE_VERIFY
    assert done.extra_info["bad_chunks"] == "2" and done.extra_info["corrupt_backups"] == backup.backup_id
    marked = await get_backup(caller, backup.backup_id)
    assert marked.corrupt and marked.verified_time.seconds > 0
    for call in (caller.backups.RestoreBackup(bp.RestoreBackupRequest(backup_id=backup.backup_id)),
                 caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(backup_id=backup.backup_id,
                                                                                     name="again"))):
        await expect_error(call, grpc.StatusCode.DATA_LOSS, "BackupService.6750")
    assert sha256_file(disk.path) == image  # nothing touched the source

    # The damaged chunks were quarantined: the next backup stores them again and is whole.
    fresh = await backup_now(caller, vault.vault_id)
    assert not fresh.corrupt
    reply = await caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(backup_id=fresh.backup_id,
                                                                                     name="healed"))
    await wait_success(caller, reply.task_id)
    assert sha256_file(await disk_path(caller, reply.disk_id)) == image
    verify = await caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault.vault_id,
                                                                        backup_ids=[fresh.backup_id]))
    done = await wait_success(caller, verify.task_id)
    assert done.extra_info["bad_chunks"] == "0" and done.extra_info["corrupt_backups"] == ""


def _vault_keys(services, vault_id: str):
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        kek_id, wrapped_id, wrapped_enc = conn.execute(
            "SELECT kek_id, wrapped_id_key, wrapped_enc_key FROM backup.vault_keys WHERE vault_id = %s",
            (vault_id,)).fetchone()
    provider = KeyFileProvider.from_file(kek_file(services.infra))
    return unwrap_vault_keys(provider, vault_id, WrappedVaultKeys(kek_id, wrapped_id, wrapped_enc))


def _manifest_id(services, backup_id: str) -> str:
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        return conn.execute("SELECT manifest_id FROM backup.backups WHERE backup_id = %s", (backup_id,)).fetchone()[0]


async def test_verify_finds_a_patched_block_its_chunks_do_not_make(services, caller):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=25)
    full = await backup_now(caller, vault.vault_id)
    with open(disk.path, "r+b") as f:  # a few bytes in two data blocks: the incremental stores them as patches
        data = f.read()
        blocks = [i for i in range(len(data) // BLOCK) if data[i * BLOCK:(i + 1) * BLOCK].strip(b"\0")]
        for i in blocks[:2]:
            f.seek(i * BLOCK + 5000)
            f.write(os.urandom(100))
    incremental = await backup_now(caller, vault.vault_id)
    verify = await caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault.vault_id))
    done = await wait_success(caller, verify.task_id)
    assert done.extra_info["bad_patched_blocks"] == "0" and done.extra_info["corrupt_backups"] == ""

    # The incremental's manifest rewritten so one patch lies over another block than its own: each chunk is sound.
    store, keys = FsChunkStore(services.infra.base / "store"), _vault_keys(services, vault.vault_id)
    key = manifest_key(vault.vault_id, _manifest_id(services, incremental.backup_id))
    manifest = load_manifest(store, keys, vault.vault_id, _manifest_id(services, incremental.backup_id))
    assert sorted(manifest.patches) == blocks[:2]
    first, other = blocks[0], blocks[2]
    full_manifest = load_manifest(store, keys, vault.vault_id, _manifest_id(services, full.backup_id))
    wrong = manifest.patches | {first: manifest.patch_of(first)._replace(base=full_manifest.block_id(other))}
    bad = DiskManifest(manifest.disk_size, manifest.block_size, manifest.ids, manifest.zero, wrong)
    store.delete(key)
    store.put(key, ChunkCodec(keys).seal(bad.encode(), key.encode()))

    verify = await caller.backups.VerifyBackups(bp.VerifyBackupsRequest(vault_id=vault.vault_id))
    done = await wait_success(caller, verify.task_id)
    assert done.extra_info["bad_chunks"] == "0" and done.extra_info["bad_patched_blocks"] == "1"
    assert done.extra_info["corrupt_backups"] == incremental.backup_id
    assert (await get_backup(caller, incremental.backup_id)).corrupt
    assert not (await get_backup(caller, full.backup_id)).corrupt
    await expect_error(caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
        backup_id=incremental.backup_id, name="refused")), grpc.StatusCode.DATA_LOSS, "BackupService.6750")


async def test_gc_frees_what_no_backup_uses_and_usage_follows(services, caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=22)

    async def used_now():
        return (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault.used_bytes

    first = await backup_now(caller, vault.vault_id)
    used_first = await eventually(used_now)
    write_disk(disk.path, seed=23, chunks=8, chunk=2 * MIB)  # whole blocks rewritten: not patches of the first's
    second = await backup_now(caller, vault.vault_id)
    before = len(_chunk_files(services, vault.vault_id))

    async def grown():
        return (await used_now()) > used_first
    await eventually(grown)
    used_before = await used_now()
    # An orphan a crashed backup might leave: a chunk file with no index row.
    store = FsChunkStore(services.infra.base / "store")
    store.put(f"{vault.vault_id}/chunks/{'ab' * 32}", b"left behind by a crash")

    deleted = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=first.backup_id))
    await wait_success(caller, deleted.task_id)
    gc = await caller.backups.CollectGarbage(bp.CollectGarbageRequest(vault_id=vault.vault_id, grace_seconds=0))
    task = await wait_success(caller, gc.task_id)
    assert task.operation_type == tp.OPERATION_TYPE_GC and task.extra_info["exclusive"] == "true"
    after = len(_chunk_files(services, vault.vault_id))
    assert after <= before  # packs go when nothing in them is live (the first backup's own chunks share its pack)
    assert not store.exists_many([f"{vault.vault_id}/chunks/{'ab' * 32}"])

    async def dropped():
        return await used_now() < used_before
    await eventually(dropped)
    reply = await caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(backup_id=second.backup_id,
                                                                                     name="survivor"))
    await wait_success(caller, reply.task_id)
    assert sha256_file(await disk_path(caller, reply.disk_id)) == sha256_file(disk.path)


async def test_deleting_a_vault_deletes_its_backups_and_chunks(services, caller):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=24)
    backup = await backup_now(caller, vault.vault_id)
    assert _chunk_files(services, vault.vault_id)
    task_id = (await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))).task_id
    task = await wait_success(caller, task_id)
    assert task.operation_type == tp.OPERATION_TYPE_VAULT_DELETE and task.extra_info["total_count"] == "1"
    await expect_error(caller.backups.GetBackup(bp.GetBackupRequest(backup_id=backup.backup_id)),
                       grpc.StatusCode.NOT_FOUND)
    assert _chunk_files(services, vault.vault_id) == []

    async def vault_gone():
        try:
            await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND
    await eventually(vault_gone)
