"""The local provider's file operations on a temporary folder: sparse disks, growth, deletes, path safety."""
from __future__ import annotations

import errno
import os
import uuid

import pytest

from cbr_backup.bootstrap import local_provider
from cbr_backup.domain import errors
from cbr_backup.providers.base import UnsafePathError
from cbr_backup.providers.local import LocalProvider
from cbr_common.settings import Settings, SettingsError

MIB = 1024 * 1024
PROJECT = "project-abc123"


@pytest.fixture
def provider(tmp_path) -> LocalProvider:
    provider = LocalProvider(tmp_path / "pool", tmp_path / "fs")
    provider.prepare()
    return provider


def new_id() -> str:
    return str(uuid.uuid4())


async def test_new_disk_is_a_sparse_file_in_the_projects_folder(provider, tmp_path):
    disk_id = new_id()
    path = await provider.create_disk(PROJECT, disk_id, 64 * MIB)
    assert path == str(tmp_path / "pool" / PROJECT / f"{disk_id}.raw")
    st = os.stat(path)
    assert st.st_size == 64 * MIB
    assert st.st_blocks == 0  # truncate only: not one zero was written
    assert st.st_mode & 0o777 == 0o600


async def test_a_disk_is_never_created_over_an_existing_file(provider):
    disk_id = new_id()
    await provider.create_disk(PROJECT, disk_id, MIB)
    with pytest.raises(FileExistsError):
        await provider.create_disk(PROJECT, disk_id, 2 * MIB)
    assert os.path.getsize(provider.disk_path(PROJECT, disk_id)) == MIB


async def test_growing_keeps_the_data_and_adds_a_hole(provider):
    disk_id = new_id()
    path = await provider.create_disk(PROJECT, disk_id, MIB)
    with open(path, "r+b") as f:
        f.write(b"head")
        f.seek(MIB - 4)
        f.write(b"tail")
    blocks_before = os.stat(path).st_blocks
    await provider.grow_disk(PROJECT, disk_id, 16 * MIB)
    st = os.stat(path)
    assert st.st_size == 16 * MIB
    assert st.st_blocks == blocks_before  # the new tail is a hole
    with open(path, "rb") as f:
        assert f.read(4) == b"head"
        f.seek(MIB - 4)
        assert f.read(4) == b"tail"
        assert f.read(MIB) == bytes(MIB)


async def test_grow_never_shrinks_and_undo_never_grows(provider):
    disk_id = new_id()
    path = await provider.create_disk(PROJECT, disk_id, 2 * MIB)
    with pytest.raises(ValueError):
        await provider.grow_disk(PROJECT, disk_id, MIB)
    assert os.path.getsize(path) == 2 * MIB
    await provider.grow_disk(PROJECT, disk_id, 4 * MIB)
    with pytest.raises(ValueError):
        await provider.undo_grow(PROJECT, disk_id, 8 * MIB)
    await provider.undo_grow(PROJECT, disk_id, 2 * MIB)
    assert os.path.getsize(path) == 2 * MIB


async def test_delete_disk_unlinks_and_is_idempotent(provider):
    disk_id = new_id()
    path = await provider.create_disk(PROJECT, disk_id, MIB)
    await provider.delete_disk(PROJECT, disk_id)
    assert not os.path.exists(path)
    await provider.delete_disk(PROJECT, disk_id)
    await provider.delete_disk("project-never-seen", new_id())


async def test_a_full_pool_is_resource_exhausted_and_leaves_no_file(provider, monkeypatch):
    def refuse(fd, size):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    monkeypatch.setattr(os, "ftruncate", refuse)
    disk_id = new_id()
    with pytest.raises(errors.PoolCapacityError):
        await provider.create_disk(PROJECT, disk_id, 64 * 1024 ** 4)
    assert not os.path.exists(provider.disk_path(PROJECT, disk_id))


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "x", "", "/tmp/evil", "00000000-0000-0000-0000-00000000000/"])
async def test_paths_come_only_from_uuids(provider, bad_id):
    with pytest.raises(errors.InvalidIdError):
        await provider.create_disk(PROJECT, bad_id, MIB)
    with pytest.raises(errors.InvalidIdError):
        await provider.delete_disk(PROJECT, bad_id)
    with pytest.raises(errors.InvalidIdError):
        await provider.create_file_system(PROJECT, bad_id)
    with pytest.raises(errors.InvalidIdError):
        await provider.delete_file_system(PROJECT, bad_id)


@pytest.mark.parametrize("bad_project", ["..", ".", "a/b", "", "p\n"])
async def test_project_ids_that_are_not_plain_names_are_refused(provider, bad_project):
    with pytest.raises(errors.InvalidProjectError):
        await provider.create_disk(bad_project, new_id(), MIB)
    with pytest.raises(errors.InvalidProjectError):
        await provider.create_file_system(bad_project, new_id())


async def test_a_symlinked_project_folder_is_never_used(provider, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim_id = new_id()
    (outside / f"{victim_id}.raw").write_bytes(b"precious")
    (outside / victim_id).mkdir()
    (outside / victim_id / "file").write_bytes(b"precious")
    os.symlink(outside, tmp_path / "pool" / "evil")
    os.symlink(outside, tmp_path / "fs" / "evil")
    with pytest.raises(UnsafePathError):
        await provider.create_disk("evil", new_id(), MIB)
    with pytest.raises(UnsafePathError):
        await provider.delete_disk("evil", victim_id)
    with pytest.raises(UnsafePathError):
        await provider.grow_disk("evil", victim_id, MIB)
    with pytest.raises(UnsafePathError):
        await provider.create_file_system("evil", new_id())
    with pytest.raises(UnsafePathError):
        await provider.delete_file_system("evil", victim_id)
    with pytest.raises(UnsafePathError):
        await provider.file_system_used_bytes("evil", victim_id)
    assert (outside / f"{victim_id}.raw").read_bytes() == b"precious"
    assert (outside / victim_id / "file").read_bytes() == b"precious"
    assert sorted(os.listdir(outside)) == sorted([f"{victim_id}.raw", victim_id])


async def test_a_disk_file_replaced_by_a_symlink_is_not_written_through(provider, tmp_path):
    disk_id = new_id()
    path = await provider.create_disk(PROJECT, disk_id, MIB)
    target = tmp_path / "target"
    target.write_bytes(b"x" * 10)
    os.unlink(path)
    os.symlink(target, path)
    with pytest.raises(OSError) as raised:
        await provider.grow_disk(PROJECT, disk_id, 2 * MIB)
    assert raised.value.errno == errno.ELOOP
    await provider.delete_disk(PROJECT, disk_id)  # removes the link, not its target
    assert not os.path.lexists(path)
    assert target.read_bytes() == b"x" * 10


async def test_file_system_is_a_folder_and_its_size_counts_regular_files(provider, tmp_path):
    fs_id = new_id()
    path = await provider.create_file_system(PROJECT, fs_id)
    assert path == str(tmp_path / "fs" / PROJECT / fs_id)
    assert os.listdir(path) == []
    assert await provider.file_system_used_bytes(PROJECT, fs_id) == 0
    os.makedirs(os.path.join(path, "a", "b"))
    with open(os.path.join(path, "one"), "wb") as f:
        f.write(b"1" * 100)
    with open(os.path.join(path, "a", "b", "two"), "wb") as f:
        f.write(b"2" * 23)
    big_outside = tmp_path / "big"
    big_outside.write_bytes(b"b" * 5000)
    os.symlink(big_outside, os.path.join(path, "link-to-file"))
    os.symlink(tmp_path, os.path.join(path, "link-to-folder"))
    assert await provider.file_system_used_bytes(PROJECT, fs_id) == 123


async def test_the_size_walk_is_bounded(tmp_path):
    provider = LocalProvider(tmp_path / "pool", tmp_path / "fs", max_walk_entries=10)
    provider.prepare()
    fs_id = new_id()
    path = await provider.create_file_system(PROJECT, fs_id)
    for i in range(50):
        with open(os.path.join(path, f"f{i}"), "wb") as f:
            f.write(b"x")
    assert await provider.file_system_used_bytes(PROJECT, fs_id) == 10


async def test_missing_file_system_is_size_zero(provider):
    assert await provider.file_system_used_bytes(PROJECT, new_id()) == 0
    assert await provider.file_system_used_bytes("project-never-seen", new_id()) == 0


async def test_delete_file_system_removes_the_tree_but_nothing_a_link_points_to(provider, tmp_path):
    fs_id = new_id()
    path = await provider.create_file_system(PROJECT, fs_id)
    os.makedirs(os.path.join(path, "deep", "er"))
    with open(os.path.join(path, "deep", "er", "f"), "wb") as f:
        f.write(b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    os.symlink(outside, os.path.join(path, "deep", "link"))
    await provider.delete_file_system(PROJECT, fs_id)
    assert not os.path.lexists(path)
    assert (outside / "keep").read_bytes() == b"keep"
    await provider.delete_file_system(PROJECT, fs_id)  # idempotent


async def test_a_file_system_folder_replaced_by_a_symlink_loses_only_the_link(provider, tmp_path):
    fs_id = new_id()
    path = await provider.create_file_system(PROJECT, fs_id)
    os.rmdir(path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    os.symlink(outside, path)
    assert await provider.file_system_used_bytes(PROJECT, fs_id) == 0
    await provider.delete_file_system(PROJECT, fs_id)
    assert not os.path.lexists(path)
    assert (outside / "keep").read_bytes() == b"keep"


def test_start_up_creates_the_folders_and_requires_them(tmp_path):
    base = dict(service="backup", database_url="postgresql+psycopg://x/y", nats_url="nats://x", jwt_secret="s")
    provider = local_provider(Settings(**base, pool_dir=str(tmp_path / "a" / "pool"), fs_root=str(tmp_path / "b")))
    assert (tmp_path / "a" / "pool").is_dir() and (tmp_path / "b").is_dir()
    assert provider.pool_dir == tmp_path / "a" / "pool"
    with pytest.raises(SettingsError, match="CBR_POOL_DIR"):
        local_provider(Settings(**base, fs_root=str(tmp_path / "b")))
    with pytest.raises(SettingsError, match="CBR_FS_ROOT"):
        local_provider(Settings(**base, pool_dir=str(tmp_path / "pool")))
