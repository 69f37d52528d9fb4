"""Restore points of the local provider around an in-place restore: a corrupt chunk found part-way leaves the
disk half-written, and rolling back to the point makes it exactly what it was; a point survives for the retry
of the same restore and is whole or absent, never partial."""
import os
import uuid

import pytest

from cbr_backup.datapath import ChunkCorruptError
from cbr_backup.providers.local import RESTORE_POINTS, LocalProvider
from tests.support.packs import corrupt_chunk
from tests.unit.backup.datapath.disk_images import MIB, make_disk, sha256_file
from tests.unit.backup.datapath.test_disk_paths import Vault

PROJECT = "project-points"


@pytest.fixture
def provider(tmp_path) -> LocalProvider:
    provider = LocalProvider(tmp_path / "pool", tmp_path / "fs")
    provider.prepare()
    return provider


async def disk_with_backup(provider, vault):
    """A 16 MiB disk, its backup with the chunk of the last data block corrupted, then the disk rewritten."""
    disk_id = str(uuid.uuid4())
    path = await provider.create_disk(PROJECT, disk_id, 16 * MIB)
    make_disk(path, 16 * MIB, seed=3, holes=0.0, text=0.0)
    full = vault.backup(path)
    *_, (_, last) = full.manifest.data_blocks()
    corrupt_chunk(vault.store, vault.keys, vault.id, last)
    make_disk(path, 16 * MIB, seed=4, holes=0.2, text=0.0)  # what the restore will find
    return disk_id, path, full.manifest


async def test_a_failed_restore_rolls_back_to_the_point(provider, tmp_path):
    vault = Vault()
    disk_id, path, manifest = await disk_with_backup(provider, vault)
    before = sha256_file(path)
    point = await provider.restore_point(PROJECT, disk_id, str(uuid.uuid4()))
    with pytest.raises(ChunkCorruptError):
        vault.restore(manifest, path, in_place=True)
    assert sha256_file(path) != before  # the pieces before the bad chunk were written: half restored
    await point.roll_back()
    assert sha256_file(path) == before
    assert os.listdir(tmp_path / "pool" / PROJECT / RESTORE_POINTS) == []  # spent by the rollback
    await point.release()  # nothing left to release: no error


async def test_a_retry_finds_the_point_of_its_restore_and_other_leftovers_go(provider, tmp_path):
    vault = Vault()
    disk_id, path, manifest = await disk_with_backup(provider, vault)
    before = sha256_file(path)
    folder = tmp_path / "pool" / PROJECT / RESTORE_POINTS
    restore_id = str(uuid.uuid4())
    folder.mkdir(exist_ok=True)
    (folder / f"{disk_id}.{uuid.uuid4()}.raw").write_bytes(b"a point of a restore that never ended")
    (folder / f"{disk_id}.{restore_id}.raw.part").write_bytes(b"a copy cut off by kill -9")
    await provider.restore_point(PROJECT, disk_id, restore_id)
    assert sorted(os.listdir(folder)) == [f"{disk_id}.{restore_id}.raw"]
    with pytest.raises(ChunkCorruptError):
        vault.restore(manifest, path, in_place=True)  # the worker dies here, say

    again = await provider.restore_point(PROJECT, disk_id, restore_id)  # the retry: not the half-written disk
    await again.roll_back()
    assert sha256_file(path) == before

    point = await provider.restore_point(PROJECT, disk_id, restore_id)
    await point.release()
    assert os.listdir(folder) == []
    await provider.restore_point(PROJECT, disk_id, restore_id)
    await provider.delete_disk(PROJECT, disk_id)  # a deleted disk takes its points along
    assert os.listdir(folder) == []


async def test_restore_ids_are_checked(provider):
    disk_id = str(uuid.uuid4())
    await provider.create_disk(PROJECT, disk_id, MIB)
    with pytest.raises(Exception, match="restore_id"):
        await provider.restore_point(PROJECT, disk_id, "../../etc")


async def test_a_pool_without_room_for_the_copy_gives_no_point(provider, tmp_path, monkeypatch):
    """The restore then goes on without a rollback (its disk shows `restoring` until whole), not failing for
    want of room the restore itself does not need."""
    import errno
    from cbr_backup.datapath import snapshot
    disk_id = str(uuid.uuid4())
    path = await provider.create_disk(PROJECT, disk_id, MIB)
    make_disk(path, MIB, seed=5, holes=0.0)

    def pool_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapshot, "_copy_extents", pool_full)
    monkeypatch.setattr(snapshot, "_clone", lambda src, dst: False)
    assert await provider.restore_point(PROJECT, disk_id, str(uuid.uuid4())) is None
    assert os.listdir(tmp_path / "pool" / PROJECT / RESTORE_POINTS) == []
