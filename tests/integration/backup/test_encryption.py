"""Encryption on by default, through the real services: a vault's keys are made wrapped when it is created,
nothing a disk held is readable in the store, an unencrypted vault is only made on request, clear keys from
before are wrapped, a KEK rotation keeps backups restorable, and deleting a vault destroys its keys."""
from __future__ import annotations

import os
import random

import psycopg

from cbr.vault.v1 import vault_pb2 as vp
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.keys import KeyFileProvider, create_kek_file, unwrap_vault_keys
from cbr_backup.keys.__main__ import main as keys_command
from cbr_backup.keys.vault_keys import WrappedVaultKeys
from cbr_backup.service.vault_keys import wrap_clear_keys
from cbr_common.db import Database
from cbr.backup.v1 import task_pb2 as tp
from tests.support.backups import backup_now, checkpoint, new_disk_from, sha256_file, wait_success, wait_task
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref
from tests.support.services import eventually, kek_file
from tests.support.workers import without_shared_workers

MARKER = b"CBR-KNOWN-PLAINTEXT-7f3a9c"


def write_known_plaintext(path: str, seed: int) -> bytes:
    """Text-like data (compressible) and a random block that starts with MARKER (stored bare where not
    encrypted); returns 64 bytes of the random block to look for in the store."""
    rng = random.Random(seed)
    text = b"".join(MARKER + b" line %d\n" % i for i in range(40_000))[:MIB]
    noise = MARKER + rng.randbytes(256 * 1024 - len(MARKER))
    with open(path, "r+b") as f:
        f.write(text)
        f.seek(2 * MIB)
        f.write(noise)
        os.fsync(f.fileno())
    return noise[4096:4160]


def stored_values(services, vault_id: str) -> list[bytes]:
    store = FsChunkStore(str(services.infra.base / "store"))
    return [store.get(key) for key in store.iterate(f"{vault_id}/")]


def key_row(services, vault_id: str):
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        return conn.execute("SELECT id_key, kek_id, wrapped_id_key, wrapped_enc_key FROM backup.vault_keys "
                            "WHERE vault_id = %s", (vault_id,)).fetchone()


async def encrypted_disk_vault(caller, seed: int, **vault_fields):
    disk = await create_disk(caller, f"disk-{seed}", 4 * MIB)
    sample = write_known_plaintext(disk.path, seed)
    vault = await create_vault(caller, f"vault-{seed}", DISK, BACKUP, resources=[ref(disk)], **vault_fields)
    return disk, vault, sample


async def test_a_vault_is_encrypted_by_default_and_its_store_hides_the_data(services, caller):
    disk, vault, sample = await encrypted_disk_vault(caller, seed=61)
    assert vault.encrypted
    # The keys exist before any backup: made when the backup service heard of the vault, wrapped.
    row = await eventually(lambda: _async(key_row(services, vault.vault_id)))
    id_key, kek_id, wrapped_id, wrapped_enc = row
    assert id_key is None and kek_id and wrapped_id and wrapped_enc

    backup = await backup_now(caller, vault.vault_id)
    values = stored_values(services, vault.vault_id)
    assert len(values) > 2  # chunks, the manifest (and a dictionary)
    assert not any(MARKER in v or sample in v for v in values)
    copy = await new_disk_from(caller, backup.backup_id, name="copy")
    assert sha256_file(await _path(caller, copy)) == sha256_file(disk.path)
    assert key_row(services, vault.vault_id) == row  # the job unwrapped them and stored nothing new


async def test_an_unencrypted_vault_only_when_asked_for(services, caller):
    disk, vault, sample = await encrypted_disk_vault(caller, seed=62, encrypted=False)
    assert not vault.encrypted
    got = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id))).vault
    assert not got.encrypted
    made = await eventually(lambda: _async(key_row(services, vault.vault_id)))  # by the VaultCreated event
    assert made[2] and made[3] is None
    backup = await backup_now(caller, vault.vault_id)
    values = stored_values(services, vault.vault_id)
    assert any(sample in v for v in values)  # readable (bare random block, compressed text)
    id_key, kek_id, wrapped_id, wrapped_enc = key_row(services, vault.vault_id)
    assert id_key is None and wrapped_id and wrapped_enc is None  # its id key is wrapped all the same
    copy = await new_disk_from(caller, backup.backup_id, name="copy")
    assert sha256_file(await _path(caller, copy)) == sha256_file(disk.path)


async def test_clear_keys_from_before_are_wrapped_and_their_backups_stay_readable(services, caller):
    disk, vault, _ = await encrypted_disk_vault(caller, seed=63, encrypted=False)
    backup = await backup_now(caller, vault.vault_id)
    provider = KeyFileProvider.from_file(kek_file(services.infra))
    _, kek_id, wrapped_id, _ = key_row(services, vault.vault_id)
    id_key = unwrap_vault_keys(provider, vault.vault_id, WrappedVaultKeys(kek_id, wrapped_id, None)).id_key

    def back_to_clear():  # the row as the services before this change kept it
        with psycopg.connect(services.infra.postgres.conninfo()) as conn:
            conn.execute("UPDATE backup.vault_keys SET id_key = %s, kek_id = NULL, wrapped_id_key = NULL, "
                         "wrapped_enc_key = NULL WHERE vault_id = %s", (id_key, vault.vault_id))

    # A job meeting a clear row wraps it on the way.
    back_to_clear()
    copy = await new_disk_from(caller, backup.backup_id, name="copy")
    assert sha256_file(await _path(caller, copy)) == sha256_file(disk.path)
    assert key_row(services, vault.vault_id)[0] is None
    # The service's start wraps every clear row.
    back_to_clear()
    db = Database(services.infra.postgres.url, "backup", pool_size=1)
    try:
        async with BackupUnitOfWork(db) as uow:
            assert await wrap_clear_keys(uow, provider) == 1
            await uow.commit()
    finally:
        await db.close()
    with psycopg.connect(services.infra.postgres.conninfo()) as conn:
        assert conn.execute("SELECT count(*) FROM backup.vault_keys WHERE id_key IS NOT NULL").fetchone() == (0,)
    assert sha256_file(await _path(caller, await new_disk_from(caller, backup.backup_id, name="c2"))) == \
        sha256_file(disk.path)


async def test_a_kek_rotation_rewraps_and_backups_stay_restorable(services, caller, monkeypatch, tmp_path):
    disk, vault, _ = await encrypted_disk_vault(caller, seed=64)
    backup = await backup_now(caller, vault.vault_id)
    before = key_row(services, vault.vault_id)
    old_kek, new_kek = kek_file(services.infra), create_kek_file(tmp_path / "new-kek")
    monkeypatch.setenv("CBR_DATABASE_URL", services.infra.postgres.url)
    monkeypatch.setenv("CBR_KEK_FILE", str(old_kek))
    await services.stop_workers()  # the operator stops the workers, rotates, and starts them on the new KEK
    try:
        assert await _run(keys_command, ["rotate", "--new-kek-file", str(new_kek)]) == 0
        after = key_row(services, vault.vault_id)
        assert after[1] == KeyFileProvider.from_file(new_kek).kek_id != before[1]
        assert after[2] != before[2] and after[3] != before[3]
        assert await _run(keys_command, ["rotate", "--new-kek-file", str(new_kek)]) == 0  # again: nothing to do
        assert key_row(services, vault.vault_id) == after
        await services.start_worker(kek_file=str(new_kek))
        copy = await new_disk_from(caller, backup.backup_id, name="copy")
        assert sha256_file(await _path(caller, copy)) == sha256_file(disk.path)
        second = await backup_now(caller, vault.vault_id)  # same keys: the incremental dedups against the first
        assert second.incremental
    finally:  # back to the session's KEK, for the other tests
        await services.stop_workers()
        monkeypatch.setenv("CBR_KEK_FILE", str(new_kek))
        assert await _run(keys_command, ["rotate", "--new-kek-file", str(old_kek)]) == 0
        await services.start_worker()
    assert key_row(services, vault.vault_id)[1] == before[1]


async def test_a_worker_with_another_kek_fails_the_job_saying_so(services, caller, tmp_path):
    disk, vault, _ = await encrypted_disk_vault(caller, seed=65)
    await backup_now(caller, vault.vault_id)  # its keys exist, wrapped by the session's KEK
    other = create_kek_file(tmp_path / "other-kek")
    async with without_shared_workers(services):
        await services.start_worker(kek_file=str(other), job_attempts=1)
        task = await wait_task(caller, (await checkpoint(caller, vault.vault_id)).resources[0].task_id)
        assert task.status == tp.TASK_STATUS_FAILED and task.error.code == "BackupService.6763", task.error
        assert KeyFileProvider.from_file(other).kek_id in task.error.message  # names the KEK it has
    again = await backup_now(caller, vault.vault_id)  # the right KEK opens them: nothing was harmed
    assert again.incremental


async def test_deleting_a_vault_destroys_its_keys(services, caller):
    _, vault, _ = await encrypted_disk_vault(caller, seed=65)
    await backup_now(caller, vault.vault_id)
    assert key_row(services, vault.vault_id) is not None
    task_id = (await caller.vault.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id))).task_id
    await wait_success(caller, task_id)
    assert key_row(services, vault.vault_id) is None


async def _async(value):
    return value


async def _path(caller, disk_id: str) -> str:
    from tests.support.backups import disk_path
    return await disk_path(caller, disk_id)


async def _run(command, argv) -> int:
    import asyncio
    return await asyncio.to_thread(command, argv)


def test_migrations_keep_vaults_from_before_unencrypted_and_their_clear_keys_wrappable(infra):
    """A database as it was before encryption (vault_0002, backup_0005) with a vault and its clear id key:
    after the migrations the vault says unencrypted, its key row is intact, and a new vault defaults to
    encrypted."""
    import importlib
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    def migrate(url: str, module: str, revision: str) -> None:
        config = Config()
        config.set_main_option("script_location",
                               str(Path(next(iter(importlib.import_module(module).__path__))) / "migrations"))
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.upgrade(config, revision)

    url = infra.fresh_database()
    migrate(url, "cbr_vault", "vault_0002")
    migrate(url, "cbr_backup", "backup_0005")
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    columns = ("vault_id, project_id, name, description, object_type, protect_type, consistent_level, size_gb, "
               "used_bytes, auto_expand, auto_bind, smn_notify, threshold, locked, status, created_time, "
               "updated_time")
    values = "'{}', 'p', 'old', '', 'disk', 'backup', 'crash_consistent', 1, 0, false, false, true, 80, false, " \
             "'available', now(), now()"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"INSERT INTO vault.vaults ({columns}) VALUES ({values.format('v-old')})")
        conn.execute("INSERT INTO backup.vault_keys (vault_id, id_key, created_time) VALUES ('v-old', %s, now())",
                     (b"i" * 32,))
    migrate(url, "cbr_vault", "head")
    migrate(url, "cbr_backup", "head")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"INSERT INTO vault.vaults ({columns}) VALUES ({values.format('v-new')})")
        assert conn.execute("SELECT vault_id, encrypted FROM vault.vaults ORDER BY vault_id").fetchall() == [
            ("v-new", True), ("v-old", False)]
        assert conn.execute("SELECT id_key, kek_id, wrapped_id_key FROM backup.vault_keys").fetchall() == [
            (b"i" * 32, None, None)]
