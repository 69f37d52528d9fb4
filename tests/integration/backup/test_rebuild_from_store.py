"""A store that survives losing its database (DESIGN.md 14): with a vault's rows in the backup schema gone, the
rebuild command brings back its keys, chunk index and backups from the store and the KEK alone, and the
incremental backup restores byte for byte."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import psycopg
import pytest

from cbr.backup.v1 import backup_pb2 as bp
from tests.support.backups import (backup_now, disk_path, fill, get_backup, new_disk_from, sha256_file, wait_success,
                                   write_disk)
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref

VAULT_TABLES = ("backups", "chunks", "vault_keys", "checkpoints", "tasks")


def _rows(services, sql: str, *params):
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        return conn.execute(sql, params).fetchall()


def _vault_rows(services, vault_id: str) -> dict:
    return {
        "keys": _rows(services, "SELECT kek_id, wrapped_id_key, wrapped_enc_key FROM backup.vault_keys "
                                "WHERE vault_id = %s", vault_id),
        "chunks": _rows(services, "SELECT digest, raw_size, stored_size, pack_id, pack_offset FROM backup.chunks "
                                  "WHERE vault_id = %s ORDER BY digest", vault_id),
        "backups": _rows(services, "SELECT backup_id, status, incremental, manifest_id, base_backup_id, logical_bytes, "
                                   "stored_bytes, added_bytes, protected_time, checkpoint_id, resource_id "
                                   "FROM backup.backups WHERE vault_id = %s ORDER BY backup_id", vault_id),
        "checkpoints": _rows(services, "SELECT checkpoint_id, name FROM backup.checkpoints WHERE vault_id = %s "
                                       "ORDER BY checkpoint_id", vault_id),
    }


def _forget_vault_rows(services, vault_id: str) -> None:
    """What losing the database means for this vault: every row of it in the backup schema goes."""
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        for table in VAULT_TABLES:
            conn.execute(f"DELETE FROM backup.{table} WHERE vault_id = %s", (vault_id,))


async def _rebuild(services, *args: str) -> subprocess.CompletedProcess:
    env = services.worker_env()
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cbr_backup.rebuild", *args], env=env,
                                   capture_output=True, text=True, timeout=120)


async def test_a_vault_is_rebuilt_from_its_store_and_its_incremental_restores(services, caller):
    disk = await create_disk(caller, "rebuilt-disk", 16 * MIB)
    write_disk(disk.path, seed=81)
    fill(disk.path, 8, 3, seed=81)
    vault = await create_vault(caller, "rebuilt-vault", DISK, BACKUP, resources=[ref(disk)])
    assert vault.encrypted
    full = await backup_now(caller, vault.vault_id)
    fill(disk.path, 12, 2, seed=82)  # the incremental's change
    incremental = await backup_now(caller, vault.vault_id)
    assert incremental.incremental
    expected = sha256_file(disk.path)
    before = _vault_rows(services, vault.vault_id)
    assert len(before["backups"]) == 2 and before["chunks"] and before["keys"]

    _forget_vault_rows(services, vault.vault_id)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await get_backup(caller, incremental.backup_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    done = await _rebuild(services, "--vault-id", vault.vault_id, "--project-id", caller.project_id)
    assert done.returncode == 0, done.stderr
    assert "backups: 2 rows (2 top level) from 2 records" in done.stdout, done.stdout
    after = _vault_rows(services, vault.vault_id)
    assert after["keys"] == before["keys"]  # the same wrapped keys, by the same KEK
    assert after["backups"] == before["backups"]
    assert after["checkpoints"] == before["checkpoints"]
    # Every chunk row is back, in the pack and at the offset it had (stored and raw sizes too).
    assert after["chunks"] == before["chunks"]

    # Again: refused while the rows exist, and with --add-missing nothing changes.
    again = await _rebuild(services, "--vault-id", vault.vault_id)
    assert again.returncode == 3 and "has rows already" in again.stderr
    again = await _rebuild(services, "--vault-id", vault.vault_id, "--add-missing")
    assert again.returncode == 0, again.stderr
    assert _vault_rows(services, vault.vault_id) == after

    got = await get_backup(caller, incremental.backup_id)
    assert got.status == bp.BACKUP_STATUS_AVAILABLE and got.incremental and not got.corrupt
    copy = await new_disk_from(caller, incremental.backup_id, name="from-rebuilt")
    assert sha256_file(await disk_path(caller, copy)) == expected
    # The vault goes on: the next backup is incremental against the rebuilt one.
    nxt = await backup_now(caller, vault.vault_id)
    assert nxt.incremental and (await get_backup(caller, full.backup_id)).status == bp.BACKUP_STATUS_AVAILABLE


async def test_the_rebuild_refuses_without_the_kek_that_wrapped_the_keys(services, caller, tmp_path):
    from cbr_backup.keys import create_kek_file

    disk = await create_disk(caller, "other-kek-disk", 4 * MIB)
    write_disk(disk.path, seed=83)
    vault = await create_vault(caller, "other-kek-vault", DISK, BACKUP, resources=[ref(disk)])
    await backup_now(caller, vault.vault_id)
    _forget_vault_rows(services, vault.vault_id)
    other = create_kek_file(tmp_path / "other-kek")
    env = services.worker_env(CBR_KEK_FILE=str(other))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cbr_backup.rebuild", "--vault-id",
                                                    vault.vault_id], env=env, capture_output=True, text=True,
                                   timeout=120)
    assert done.returncode == 3 and "opens with this KEK" in done.stderr, done.stderr
    assert _vault_rows(services, vault.vault_id)["backups"] == []


async def test_a_server_backup_comes_back_with_its_disks(services, caller):
    from tests.support.calls import SERVER, create_server

    server = await create_server(caller, "rebuilt-server", disks=2)
    paths = [await disk_path(caller, d.disk_id) for d in server.disks]
    for i, path in enumerate(paths):
        write_disk(path, seed=90 + i)
    images = [sha256_file(p) for p in paths]
    vault = await create_vault(caller, "rebuilt-servers", SERVER, BACKUP, resources=[ref(server)])
    backup = await backup_now(caller, vault.vault_id)
    assert len(backup.children) == 2
    before = _vault_rows(services, vault.vault_id)
    _forget_vault_rows(services, vault.vault_id)

    done = await _rebuild(services, "--vault-id", vault.vault_id)
    assert done.returncode == 0, done.stderr
    assert "backups: 3 rows (1 top level) from 2 records" in done.stdout, done.stdout
    assert _vault_rows(services, vault.vault_id) == before
    got = await get_backup(caller, backup.backup_id)
    assert got.status == bp.BACKUP_STATUS_AVAILABLE and len(got.children) == 2
    assert got.logical_bytes == backup.logical_bytes and got.stored_bytes == backup.stored_bytes
    for child in got.children:
        i = [d.disk_id for d in server.disks].index(child.resource_id)
        copy = await new_disk_from(caller, child.backup_id, name=f"from-rebuilt-{i}")
        assert sha256_file(await disk_path(caller, copy)) == images[i]


async def test_a_deleted_backup_takes_its_record_with_it(services, caller):
    disk = await create_disk(caller, "deleted-record-disk", 4 * MIB)
    write_disk(disk.path, seed=85)
    vault = await create_vault(caller, "deleted-record-vault", DISK, BACKUP, resources=[ref(disk)])
    first = await backup_now(caller, vault.vault_id)
    write_disk(disk.path, seed=86, chunks=2)
    second = await backup_now(caller, vault.vault_id)
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=first.backup_id))
    await wait_success(caller, reply.task_id)
    _forget_vault_rows(services, vault.vault_id)
    done = await _rebuild(services, "--vault-id", vault.vault_id)
    assert done.returncode == 0, done.stderr
    assert "backups: 1 rows (1 top level) from 1 records" in done.stdout, done.stdout
    assert [r[0] for r in _vault_rows(services, vault.vault_id)["backups"]] == [second.backup_id]


async def test_a_file_system_backup_comes_back_and_restores(services, caller):
    from cbr.backup.v1 import protectable_pb2 as pp
    from tests.integration.backup.test_file_system_backups import build_tree, describe
    from tests.support.calls import TURBO

    fs = (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="rebuilt-share"))).file_system
    build_tree(fs.path)
    expected = describe(fs.path)
    vault = await create_vault(caller, "rebuilt-share-vault", TURBO, BACKUP, resources=[ref(fs)])
    backup = await backup_now(caller, vault.vault_id)
    before = _vault_rows(services, vault.vault_id)
    _forget_vault_rows(services, vault.vault_id)
    done = await _rebuild(services, "--vault-id", vault.vault_id)
    assert done.returncode == 0, done.stderr
    assert _vault_rows(services, vault.vault_id) == before
    reply = await caller.backups.RestoreBackup(bp.RestoreBackupRequest(
        backup_id=backup.backup_id, target_path="from-rebuilt", new_directory=True))
    await wait_success(caller, reply.task_id)
    [made] = os.listdir(f"{fs.path}/from-rebuilt")
    assert describe(f"{fs.path}/from-rebuilt/{made}") == expected


async def test_backups_from_before_records_get_them_by_backfill(services, caller):
    from cbr_backup.chunkstore import FsChunkStore

    disk = await create_disk(caller, "backfill-disk", 4 * MIB)
    write_disk(disk.path, seed=87)
    vault = await create_vault(caller, "backfill-vault", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    store = FsChunkStore(str(services.infra.base / "store"))
    for prefix in ("keys", "backups"):  # as a backup made before the store kept records
        for key in list(store.iterate(f"{vault.vault_id}/{prefix}/")):
            store.delete(key)
    done = await _rebuild(services, "--vault-id", vault.vault_id, "--backfill-records")
    assert done.returncode == 0 and "wrote the records of 1 backups (0 had them already)" in done.stdout, done
    again = await _rebuild(services, "--vault-id", vault.vault_id, "--backfill-records")
    assert "wrote the records of 0 backups (1 had them already)" in again.stdout, again
    before = _vault_rows(services, vault.vault_id)
    _forget_vault_rows(services, vault.vault_id)
    done = await _rebuild(services, "--vault-id", vault.vault_id)
    assert done.returncode == 0, done.stderr
    assert _vault_rows(services, vault.vault_id) == before
    copy = await new_disk_from(caller, backup.backup_id, name="from-backfilled")
    assert sha256_file(await disk_path(caller, copy)) == sha256_file(disk.path)


async def test_a_kek_rotation_rewrites_the_keys_objects_and_the_rebuild_uses_the_new_kek(services, caller,
                                                                                       monkeypatch, tmp_path):
    from cbr_backup.chunkstore import FsChunkStore
    from cbr_backup.datapath.records import keys_key, read_keys_objects
    from cbr_backup.keys import KeyFileProvider, create_kek_file
    from cbr_backup.keys.__main__ import main as keys_command
    from tests.support.services import kek_file

    disk = await create_disk(caller, "rotated-disk", 4 * MIB)
    write_disk(disk.path, seed=88)
    vault = await create_vault(caller, "rotated-vault", DISK, BACKUP, resources=[ref(disk)])
    backup = await backup_now(caller, vault.vault_id)
    store = FsChunkStore(str(services.infra.base / "store"))
    old_kek, new_kek = kek_file(services.infra), create_kek_file(tmp_path / "new-kek")
    old_id, new_id = (KeyFileProvider.from_file(k).kek_id for k in (old_kek, new_kek))
    assert [o.wrapped.kek_id for o in read_keys_objects(store, vault.vault_id)] == [old_id]
    monkeypatch.setenv("CBR_DATABASE_URL", services.infra.postgres.url)
    monkeypatch.setenv("CBR_STORE_DIR", str(services.infra.base / "store"))
    monkeypatch.setenv("CBR_KEK_FILE", str(old_kek))
    await services.stop_workers()
    try:
        assert await asyncio.to_thread(keys_command, ["rotate", "--new-kek-file", str(new_kek)]) == 0
        assert [o.wrapped.kek_id for o in read_keys_objects(store, vault.vault_id)] == [new_id]
        assert not store.exists_many([keys_key(vault.vault_id, old_id)])
        before = _vault_rows(services, vault.vault_id)
        _forget_vault_rows(services, vault.vault_id)
        with_old = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cbr_backup.rebuild", "--vault-id",
                                                            vault.vault_id], env=services.worker_env(),
                                           capture_output=True, text=True, timeout=120)
        assert with_old.returncode == 3, with_old.stderr  # the store's keys need the new KEK now
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cbr_backup.rebuild", "--vault-id", vault.vault_id],
            env=services.worker_env(CBR_KEK_FILE=str(new_kek)), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert _vault_rows(services, vault.vault_id) == before
        await services.start_worker(kek_file=str(new_kek))
        copy = await new_disk_from(caller, backup.backup_id, name="after-rotation")
        assert sha256_file(await disk_path(caller, copy)) == sha256_file(disk.path)
    finally:  # back to the session's KEK, for the other tests
        await services.stop_workers()
        monkeypatch.setenv("CBR_KEK_FILE", str(new_kek))
        assert await asyncio.to_thread(keys_command, ["rotate", "--new-kek-file", str(old_kek)]) == 0
        await services.start_worker()
    assert [o.wrapped.kek_id for o in read_keys_objects(store, vault.vault_id)] == [old_id]
