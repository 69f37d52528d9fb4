"""Answers that say what really happened, through gRPC: a vault's per-resource backup count and size, whether a
backup is incremental (as answered at creation and after), what a backup added to its vault beside what it
references, and a vault too full for a backup refusing it before anything is read."""
from __future__ import annotations

import contextlib
import os

import grpc
import psycopg
from sqlalchemy import text

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.events.v1 import backup_events_pb2 as be
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.backups import (backup_now, checkpoint, disk_in_vault, disk_path, get_backup, wait_success,
                                   wait_task, write_disk)
from tests.support.calls import BACKUP, MIB, SERVER, create_disk, create_server, create_vault, expect_error, ref
from tests.support.services import eventually
from tests.support.workers import no_inprocess_workers  # noqa: F401 - a fixture

GIB = 1 << 30
FULL_CODE = "BackupService.6740"


async def resource_in_vault(caller, vault_id: str, resource_id: str) -> vp.VaultResource:
    vault = (await caller.vault.GetVault(vp.GetVaultRequest(vault_id=vault_id))).vault
    return next(r for r in vault.resources if r.resource_id == resource_id)


async def wait_resource_backups(caller, vault_id: str, resource_id: str, count: int, size: int) -> None:
    async def check():
        r = await resource_in_vault(caller, vault_id, resource_id)
        assert (r.backup_count, r.backup_size_bytes) == (count, size)
        return True
    await eventually(check)


async def delete_backup(caller, backup_id: str) -> None:
    reply = await caller.backups.DeleteBackup(bp.DeleteBackupRequest(backup_id=backup_id))
    await wait_success(caller, reply.task_id)


@contextlib.asynccontextmanager
async def completed_events(services):
    seen: list[be.BackupCompleted] = []

    async def on_message(msg):
        seen.append(be.BackupCompleted.FromString(msg.data))

    sub = await services.runtimes["vault"].nats.subscribe("cbr.backup.completed", cb=on_message)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


# Backup count and size per resource of a vault


async def test_a_vault_counts_each_resources_backups_and_their_size(caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=91)
    assert (await resource_in_vault(caller, vault.vault_id, disk.resource_id)).backup_count == 0
    first = await backup_now(caller, vault.vault_id)
    write_disk(disk.path, seed=92, chunks=2)
    second = await backup_now(caller, vault.vault_id)
    assert first.added_bytes > 0 and second.added_bytes > 0
    await wait_resource_backups(caller, vault.vault_id, disk.resource_id, 2, first.added_bytes + second.added_bytes)

    await delete_backup(caller, second.backup_id)
    await wait_resource_backups(caller, vault.vault_id, disk.resource_id, 1, first.added_bytes)
    await delete_backup(caller, first.backup_id)
    await wait_resource_backups(caller, vault.vault_id, disk.resource_id, 0, 0)


async def test_a_resource_moved_to_another_vault_has_no_backups_there(caller):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=101)
    backup = await backup_now(caller, vault.vault_id)
    await wait_resource_backups(caller, vault.vault_id, disk.resource_id, 1, backup.added_bytes)
    other = await create_vault(caller, "other", disk.type, BACKUP)
    await caller.vault.MigrateResources(vp.MigrateResourcesRequest(
        vault_id=vault.vault_id, destination_vault_id=other.vault_id, resource_ids=[disk.resource_id]))
    moved = await resource_in_vault(caller, other.vault_id, disk.resource_id)
    assert (moved.backup_count, moved.backup_size_bytes) == (0, 0)  # its backup stayed in the first vault
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert [b.backup_id for b in listed.backups] == [backup.backup_id]


# Incremental as answered at creation, and after


async def test_the_first_backup_of_a_resource_says_full_from_the_start(caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=93)
    for expected in (False, True):  # the first has nothing to compare with; the second has the first
        cp = await checkpoint(caller, vault.vault_id)
        backup_id = cp.resources[0].backup_id
        assert cp.incremental is expected
        assert (await get_backup(caller, backup_id)).incremental is expected  # before it completes, most likely
        await wait_success(caller, cp.resources[0].task_id)
        assert (await get_backup(caller, backup_id)).incremental is expected
        got = (await caller.backups.GetCheckpoint(bp.GetCheckpointRequest(checkpoint_id=cp.checkpoint_id)))
        assert got.checkpoint.incremental is expected

    # Asked for a full read, it says so even with an earlier backup there.
    cp = await checkpoint(caller, vault.vault_id, incremental=False)
    assert not cp.incremental and not (await get_backup(caller, cp.resources[0].backup_id)).incremental
    await wait_success(caller, cp.resources[0].task_id)
    assert not (await get_backup(caller, cp.resources[0].backup_id)).incremental


async def test_a_server_backup_is_incremental_only_where_a_disk_has_an_earlier_backup(caller):
    server = await create_server(caller, "srv")
    for i, d in enumerate(server.disks):
        write_disk(await disk_path(caller, d.disk_id), seed=94 + i, chunks=2)
    vault = await create_vault(caller, "srv-vault", SERVER, BACKUP, resources=[ref(server)])
    cp = await checkpoint(caller, vault.vault_id)
    first = await get_backup(caller, cp.resources[0].backup_id)
    assert not cp.incremental and not first.incremental
    await wait_success(caller, cp.resources[0].task_id)
    first = await get_backup(caller, first.backup_id)
    assert not first.incremental and first.added_bytes == first.stored_bytes > 0
    assert sum(c.added_bytes for c in first.children) >= first.added_bytes  # disks may share chunks

    second = await backup_now(caller, vault.vault_id)
    assert second.incremental and 0 <= second.added_bytes < second.stored_bytes


# What a backup added, beside what it references


async def test_a_backup_reports_the_bytes_it_added_and_the_bytes_it_references(services, caller):
    disk, vault = await disk_in_vault(caller, 16 * MIB, seed=96)
    with open(disk.path, "r+b") as f:  # mostly incompressible data, so a small change is small beside it
        f.write(os.urandom(8 * MIB))
    async with completed_events(services) as seen:
        full = await backup_now(caller, vault.vault_id)
        # Every chunk of the first backup of a new vault is new to it.
        assert not full.incremental and full.added_bytes == full.stored_bytes > 7 * MIB
        with psycopg.connect(services.infra.postgres.conninfo()) as conn:  # the data path's sum is the index's
            assert conn.execute("SELECT sum(stored_size) FROM backup.chunks WHERE vault_id = %s",
                                (vault.vault_id,)).fetchone()[0] == full.stored_bytes

        with open(disk.path, "r+b") as f:
            f.seek(4 * MIB)
            f.write(os.urandom(256 * 1024))
        incremental = await backup_now(caller, vault.vault_id)
        assert incremental.incremental and incremental.stored_bytes > 7 * MIB
        assert 0 < incremental.added_bytes < incremental.stored_bytes // 10

        async def both_seen():
            return {e.backup_id: e.added_stored_bytes for e in seen
                    if e.backup_id in (full.backup_id, incremental.backup_id)} == {
                full.backup_id: full.added_bytes, incremental.backup_id: incremental.added_bytes}
        await eventually(both_seen)

    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert {b.backup_id: b.added_bytes for b in listed.backups} == {
        full.backup_id: full.added_bytes, incremental.backup_id: incremental.added_bytes}


# A vault too full for a backup


async def fill_vault(services, vault_id: str, used_bytes: int) -> None:
    """Makes the backup service's chunk index say the vault holds `used_bytes`, with one made-up chunk row."""
    async with services.runtimes["backup"].db.sessions() as session:
        current = (await session.execute(text("SELECT COALESCE(SUM(stored_size), 0) FROM backup.chunks "
                                              "WHERE vault_id = :v"), {"v": vault_id})).scalar_one()
        await session.execute(text(
            "INSERT INTO backup.chunks (vault_id, digest, raw_size, stored_size, created_time, "
            "last_referenced_time) VALUES (:v, :d, :s, :s, now(), now())"),
            {"v": vault_id, "d": os.urandom(32), "s": used_bytes - current})
        await session.commit()


async def test_a_full_vault_refuses_a_checkpoint(services, caller):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=97, size_gb=1)
    await fill_vault(services, vault.vault_id, GIB)
    await expect_error(caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault.vault_id)),
                       grpc.StatusCode.RESOURCE_EXHAUSTED, FULL_CODE)
    listed = await caller.backups.ListBackups(bp.ListBackupsRequest(vault_id=vault.vault_id))
    assert listed.count == 0  # nothing written


async def test_a_vault_filled_before_the_job_starts_fails_it_before_any_read(no_inprocess_workers, caller):
    services = no_inprocess_workers
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=98, size_gb=1)
    cp = await checkpoint(caller, vault.vault_id)  # room enough now
    await fill_vault(services, vault.vault_id, GIB)  # another backup filled it before this job ran
    await services.start_worker()
    task = await wait_task(caller, cp.resources[0].task_id)
    assert task.status == tp.TASK_STATUS_FAILED and task.error.code == FULL_CODE
    assert task.bytes_done == 0 and "read_bytes" not in task.extra_info
    assert (await get_backup(caller, cp.resources[0].backup_id)).status == bp.BACKUP_STATUS_ERROR


async def test_a_vault_with_some_room_takes_an_incremental_but_no_full_that_may_not_fit(services, caller):
    disk, vault = await disk_in_vault(caller, 8 * MIB, seed=99, size_gb=1)
    await backup_now(caller, vault.vault_id)
    await fill_vault(services, vault.vault_id, GIB - 4 * MIB)  # 4 MiB free: less than the 8 MiB disk

    # A full read needs room for the whole disk: skipped at once, nothing started.
    cp = await checkpoint(caller, vault.vault_id, incremental=False)
    assert not cp.resources and [s.code for s in cp.skipped_resources] == [FULL_CODE]
    assert "8388608 bytes" in cp.skipped_resources[0].reason

    # An incremental may add little: it runs, and fits.
    write_disk(disk.path, seed=100, chunks=1)
    backup = await backup_now(caller, vault.vault_id)
    assert backup.incremental and backup.status == bp.BACKUP_STATUS_AVAILABLE

    # A new disk in the vault has no earlier backup: its first one is full, so it is skipped; the other runs.
    other = await create_disk(caller, "other", 8 * MIB)
    await caller.vault.AddResources(vp.AddResourcesRequest(vault_id=vault.vault_id, resources=[
        vp.ResourceRef(resource_id=other.resource_id, type=disk.type)]))
    cp = await checkpoint(caller, vault.vault_id)
    assert [r.resource_id for r in cp.resources] == [disk.resource_id]
    assert [(s.resource_id, s.code) for s in cp.skipped_resources] == [(other.resource_id, FULL_CODE)]
    await wait_success(caller, cp.resources[0].task_id)
