"""The order of row and file in the protectable use cases, with an in-memory unit of work and a real provider:
never a row without its file, and a failed commit takes its new file back."""
from __future__ import annotations

import dataclasses
import os

import pytest

from cbr_backup.domain import errors
from cbr_backup.providers.local import LocalProvider
from cbr_backup.service import protectables

MIB = 1024 * 1024
PROJECT = "project-abc123"


class FakeInventory:
    def __init__(self, store: dict):
        self._store = store

    async def add_disk(self, disk):
        self._store[disk.disk_id] = disk

    async def get_disk(self, project_id, disk_id, for_update=False, for_share=False):
        disk = self._store.get(disk_id)
        return disk if disk is not None and disk.project_id == project_id else None

    async def set_disk_size(self, disk_id, size_bytes):
        self._store[disk_id] = dataclasses.replace(self._store[disk_id], size_bytes=size_bytes)

    async def delete_disk(self, disk_id):
        del self._store[disk_id]

    async def add_file_system(self, fs):
        self._store[fs.fs_id] = fs

    async def get_file_system(self, project_id, fs_id, for_update=False, for_share=False):
        fs = self._store.get(fs_id)
        return fs if fs is not None and fs.project_id == project_id else None

    async def delete_file_system(self, fs_id):
        del self._store[fs_id]


class NoJobs:
    """No backup or restore holds any resource."""

    async def job_of(self, resource_id: str):
        return None


class NoVaults:
    """No vault protects any resource."""

    async def vault_holding(self, project_id: str, resource_id: str):
        return None


class FakeUow:
    """Changes apply to a copy that replaces the committed state only on commit."""

    def __init__(self, db: "FakeDb"):
        self._db = db

    async def __aenter__(self):
        self._pending = dict(self._db.rows)
        self.inventory = FakeInventory(self._pending)
        self.backups = NoJobs()
        return self

    async def __aexit__(self, *exc):
        return None

    async def commit(self):
        self._db.commits += 1
        if self._db.fail_commit:
            raise ConnectionError("database went away during commit")
        self._db.rows = self._pending


class FakeDb:
    def __init__(self):
        self.rows: dict = {}
        self.fail_commit = False
        self.commits = 0

    def uow(self) -> FakeUow:
        return FakeUow(self)


@pytest.fixture
def provider(tmp_path) -> LocalProvider:
    provider = LocalProvider(tmp_path / "pool", tmp_path / "fs")
    provider.prepare()
    return provider


async def test_create_disk_writes_the_file_before_the_row(provider):
    db = FakeDb()
    disk = await protectables.create_disk(PROJECT, "d1", 8 * MIB, db.uow, provider)
    assert os.path.getsize(disk.path) == 8 * MIB
    assert db.rows[disk.resource_id].path == disk.path
    assert disk.status == "available" and disk.type == "disk"


async def test_a_failed_commit_takes_the_new_file_back(provider, tmp_path):
    db = FakeDb()
    db.fail_commit = True
    with pytest.raises(ConnectionError):
        await protectables.create_disk(PROJECT, "d1", 8 * MIB, db.uow, provider)
    with pytest.raises(ConnectionError):
        await protectables.define_file_system(PROJECT, "fs1", db.uow, provider)
    assert db.rows == {}
    assert os.listdir(tmp_path / "pool" / PROJECT) == []
    assert os.listdir(tmp_path / "fs" / PROJECT) == []


async def test_bad_requests_write_nothing(provider, tmp_path):
    db = FakeDb()
    with pytest.raises(errors.InvalidNameError):
        await protectables.create_disk(PROJECT, "no spaces", MIB, db.uow, provider)
    with pytest.raises(errors.InvalidDiskSizeError):
        await protectables.create_disk(PROJECT, "d", 1000, db.uow, provider)
    with pytest.raises(errors.InvalidProjectError):
        await protectables.create_disk("../x", "d", MIB, db.uow, provider)
    assert db.commits == 0 and os.listdir(tmp_path / "pool") == []


async def test_resize_grows_file_and_row_and_a_failed_commit_shrinks_the_file_back(provider):
    db = FakeDb()
    disk = await protectables.create_disk(PROJECT, "d1", 8 * MIB, db.uow, provider)
    grown = await protectables.resize_disk(PROJECT, disk.resource_id, 16 * MIB, db.uow, provider)
    assert grown.size_bytes == 16 * MIB == db.rows[disk.resource_id].size_bytes == os.path.getsize(disk.path)
    with pytest.raises(errors.DiskShrinkError):
        await protectables.resize_disk(PROJECT, disk.resource_id, 8 * MIB, db.uow, provider)
    db.fail_commit = True
    with pytest.raises(ConnectionError):
        await protectables.resize_disk(PROJECT, disk.resource_id, 32 * MIB, db.uow, provider)
    assert db.rows[disk.resource_id].size_bytes == 16 * MIB == os.path.getsize(disk.path)


async def test_delete_removes_the_row_then_the_file(provider):
    db = FakeDb()
    disk = await protectables.create_disk(PROJECT, "d1", MIB, db.uow, provider)
    fs = await protectables.define_file_system(PROJECT, "fs1", db.uow, provider)
    db.fail_commit = True
    with pytest.raises(ConnectionError):
        await protectables.delete_disk(PROJECT, disk.resource_id, db.uow(), provider, NoVaults())
    assert os.path.exists(disk.path)  # the row stayed, so the file stays
    db.fail_commit = False
    await protectables.delete_disk(PROJECT, disk.resource_id, db.uow(), provider, NoVaults())
    await protectables.delete_file_system(PROJECT, fs.resource_id, db.uow(), provider, NoVaults())
    assert db.rows == {}
    assert not os.path.exists(disk.path) and not os.path.exists(fs.path)
    with pytest.raises(errors.DiskNotFoundError):
        await protectables.delete_disk(PROJECT, disk.resource_id, db.uow(), provider, NoVaults())
    with pytest.raises(errors.DiskNotFoundError):
        await protectables.delete_disk("project-other", disk.resource_id, db.uow(), provider, NoVaults())
