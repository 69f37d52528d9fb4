"""Protectable use cases for the local provider: each checks every rule first, then writes.

Rows and files are written in an order that never leaves a row without its file: a new disk or file system
is created on disk first and its row committed after (a failed commit takes the file back); a delete
commits the row's removal first and removes the file after (a failed removal leaves only an orphan file).
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Awaitable, Callable, Sequence

from cbr_backup.adapters.repository import ProtectableFilter
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import VaultDirectory
from cbr_backup.domain import errors, rules
from cbr_backup.domain.model import (Disk, FileSystem, Protectable, Server, disk_protectable,
                                     file_system_protectable, server_protectable)
from cbr_backup.providers.base import Provider
from cbr_backup.service.commands import ListProtectables
from cbr_common.db import utcnow

log = logging.getLogger("cbr.backup.protectables")

MakeUow = Callable[[], BackupUnitOfWork]


async def list_protectables(cmd: ListProtectables, uow: BackupUnitOfWork,
                            provider: Provider) -> tuple[list[Protectable], int]:
    object_type = rules.check_object_type(cmd.type)
    limit, offset = rules.check_page(cmd.limit, cmd.offset)
    flt = ProtectableFilter(
        project_id=cmd.project_id, name=cmd.name, status=rules.check_status_filter(cmd.status),
        resource_id=rules.check_id(cmd.resource_id, "resource_id") if cmd.resource_id else "",
        server_id=rules.check_id(cmd.server_id, "server_id") if cmd.server_id else "")
    async with uow:
        if object_type == "disk":
            found, count = await uow.inventory.list_disks(flt, limit, offset)
            return [disk_protectable(d) for d in found], count
        if object_type == "server":
            found, count = await uow.inventory.list_servers(flt, limit, offset)
            return [server_protectable(s) for s in found], count
        found, count = await uow.inventory.list_file_systems(flt, limit, offset)
    # Sizes of file systems come from walking their trees, outside the transaction.
    return [await _file_system_protectable(fs, provider) for fs in found], count


async def get_protectable(project_id: str, object_type: str, resource_id: str, uow: BackupUnitOfWork,
                          provider: Provider) -> Protectable:
    object_type = rules.check_object_type(object_type)
    resource_id = rules.check_id(resource_id, "resource_id")
    async with uow:
        # FOR SHARE waits for a delete in flight, whose answer then counts (see _check_unprotected).
        if object_type == "disk":
            return disk_protectable(await _disk(uow, project_id, resource_id, for_share=True))
        if object_type == "server":
            return server_protectable(await _server(uow, project_id, resource_id, for_share=True))
        fs = await _file_system(uow, project_id, resource_id, for_share=True)
    return await _file_system_protectable(fs, provider)


# Disks


async def create_disk(project_id: str, name: str, size_bytes: int, make_uow: MakeUow,
                      provider: Provider) -> Protectable:
    rules.check_name(name)
    rules.check_disk_size(size_bytes)
    rules.check_project_folder(project_id)
    disk_id = str(uuid.uuid4())
    path = await provider.create_disk(project_id, disk_id, size_bytes)
    disk = Disk(disk_id=disk_id, project_id=project_id, name=name, size_bytes=size_bytes, path=path,
                created_time=utcnow())
    try:
        async with make_uow() as uow:
            await uow.inventory.add_disk(disk)
            await uow.commit()
    except Exception:
        await _take_back_if_unrecorded(make_uow, lambda uow: uow.inventory.get_disk(project_id, disk_id),
                                       lambda: provider.delete_disk(project_id, disk_id), f"disk {disk_id}")
        raise
    return disk_protectable(disk)


async def resize_disk(project_id: str, disk_id: str, new_size_bytes: int, make_uow: MakeUow,
                      provider: Provider) -> Protectable:
    disk_id = rules.check_id(disk_id, "disk_id")
    rules.check_disk_size(new_size_bytes, "new_size_bytes")
    grown_from = None
    try:
        async with make_uow() as uow:
            disk = rules.check_resizable(await _disk(uow, project_id, disk_id, for_update=True))
            rules.check_new_disk_size(disk.size_bytes, new_size_bytes)
            # The row stays locked while the file grows, so two resizes never interleave.
            await provider.grow_disk(project_id, disk_id, new_size_bytes)
            grown_from = disk.size_bytes
            await uow.inventory.set_disk_size(disk_id, new_size_bytes)
            await uow.commit()
    except Exception:
        if grown_from is not None:
            async def still_old(uow: BackupUnitOfWork):
                row = await uow.inventory.get_disk(project_id, disk_id)
                return None if row is None or row.size_bytes == grown_from else row
            await _take_back_if_unrecorded(make_uow, still_old,
                                           lambda: provider.undo_grow(project_id, disk_id, grown_from),
                                           f"growth of disk {disk_id}")
        raise
    return disk_protectable(dataclasses.replace(disk, size_bytes=new_size_bytes))


async def delete_disk(project_id: str, disk_id: str, uow: BackupUnitOfWork, provider: Provider,
                      vaults: VaultDirectory) -> None:
    disk_id = rules.check_id(disk_id, "disk_id")
    async with uow:
        rules.check_deletable(await _disk(uow, project_id, disk_id, for_update=True))
        await _check_idle(uow, disk_id)
        await _check_unprotected(vaults, project_id, "disk", disk_id)
        await uow.inventory.delete_disk(disk_id)
        await uow.commit()
    await _remove_after_commit(lambda: provider.delete_disk(project_id, disk_id), f"disk {disk_id}")


# Servers


async def define_server(project_id: str, name: str, disk_ids: Sequence[str], uow: BackupUnitOfWork) -> Protectable:
    rules.check_name(name)
    ids = rules.check_server_disks(disk_ids)
    server_id = str(uuid.uuid4())
    async with uow:
        found = await uow.inventory.lock_disks(project_id, ids)
        missing = [d for d in ids if d not in found]
        if missing:
            raise errors.DiskNotFoundError(f"disk {missing[0]} not found")
        attached = [dataclasses.replace(rules.check_attachable(found[d]), status="in-use", server_id=server_id,
                                        device=rules.device_name(i)) for i, d in enumerate(ids)]
        server = Server(server_id=server_id, project_id=project_id, name=name, disks=attached,
                        created_time=utcnow())
        await uow.inventory.add_server(server)
        await uow.commit()
    return server_protectable(server)


async def delete_server(project_id: str, server_id: str, uow: BackupUnitOfWork, vaults: VaultDirectory) -> None:
    server_id = rules.check_id(server_id, "server_id")
    async with uow:
        await _server(uow, project_id, server_id, for_update=True)
        await _check_idle(uow, server_id)
        await _check_unprotected(vaults, project_id, "server", server_id)
        await uow.inventory.delete_server(server_id)
        await uow.commit()


# File systems


async def define_file_system(project_id: str, name: str, make_uow: MakeUow, provider: Provider) -> Protectable:
    rules.check_name(name)
    rules.check_project_folder(project_id)
    fs_id = str(uuid.uuid4())
    path = await provider.create_file_system(project_id, fs_id)
    fs = FileSystem(fs_id=fs_id, project_id=project_id, name=name, path=path, created_time=utcnow())
    try:
        async with make_uow() as uow:
            await uow.inventory.add_file_system(fs)
            await uow.commit()
    except Exception:
        await _take_back_if_unrecorded(make_uow, lambda uow: uow.inventory.get_file_system(project_id, fs_id),
                                       lambda: provider.delete_file_system(project_id, fs_id),
                                       f"file system {fs_id}")
        raise
    return file_system_protectable(fs, 0)


async def delete_file_system(project_id: str, fs_id: str, uow: BackupUnitOfWork, provider: Provider,
                             vaults: VaultDirectory) -> None:
    fs_id = rules.check_id(fs_id, "file_system_id")
    async with uow:
        await _file_system(uow, project_id, fs_id, for_update=True)
        await _check_idle(uow, fs_id)
        await _check_unprotected(vaults, project_id, "file system", fs_id)
        await uow.inventory.delete_file_system(fs_id)
        await uow.commit()
    await _remove_after_commit(lambda: provider.delete_file_system(project_id, fs_id), f"file system {fs_id}")


# Shared steps


async def _check_idle(uow: BackupUnitOfWork, resource_id: str) -> None:
    """A resource being backed up or restored is not deleted from under its job."""
    task_id = await uow.backups.job_of(resource_id)
    if task_id is not None:
        raise errors.ResourceBusyError(f"resource {resource_id} is busy with task {task_id}; wait for it or cancel it")


async def _check_unprotected(vaults: VaultDirectory, project_id: str, kind: str, resource_id: str) -> None:
    """Asked of the vault service while the resource's row is locked. It cannot race an add to a vault: the
    vault service confirms the resource through GetProtectable once more after committing the add, and that
    read waits for this row lock, so either this check sees the add or that one sees the resource gone (and
    the vault takes it back)."""
    vault_id = await vaults.vault_holding(project_id, resource_id)
    if vault_id is not None:
        raise errors.ResourceProtectedError(
            f"{kind} {resource_id} is protected by vault {vault_id}; remove it from the vault first")


async def _disk(uow: BackupUnitOfWork, project_id: str, disk_id: str, for_update: bool = False,
               for_share: bool = False) -> Disk:
    disk = await uow.inventory.get_disk(project_id, disk_id, for_update=for_update, for_share=for_share)
    if disk is None:
        raise errors.DiskNotFoundError(f"disk {disk_id} not found")
    return disk


async def _server(uow: BackupUnitOfWork, project_id: str, server_id: str, for_update: bool = False,
                 for_share: bool = False) -> Server:
    server = await uow.inventory.get_server(project_id, server_id, for_update=for_update, for_share=for_share)
    if server is None:
        raise errors.ServerNotFoundError(f"server {server_id} not found")
    return server


async def _file_system(uow: BackupUnitOfWork, project_id: str, fs_id: str, for_update: bool = False,
                       for_share: bool = False) -> FileSystem:
    fs = await uow.inventory.get_file_system(project_id, fs_id, for_update=for_update, for_share=for_share)
    if fs is None:
        raise errors.FileSystemNotFoundError(f"file system {fs_id} not found")
    return fs


async def _file_system_protectable(fs: FileSystem, provider: Provider) -> Protectable:
    return file_system_protectable(fs, await provider.file_system_used_bytes(fs.project_id, fs.fs_id))


async def _take_back_if_unrecorded(make_uow: MakeUow, find: Callable[[BackupUnitOfWork], Awaitable[object]],
                                   take_back: Callable[[], Awaitable[None]], what: str) -> None:
    """After a failed commit: undoes the file change only if the database shows the commit did not happen
    (a commit can fail on the way back yet have landed). If that cannot be told, the file change stays:
    an orphan file is harmless, a row without its file is not."""
    try:
        async with make_uow() as uow:
            recorded = await find(uow)
        if recorded is None:
            await take_back()
    except Exception as exc:  # noqa: BLE001 - the caller re-raises the original error
        log.warning("could not take back after a failed commit", extra={"fields": {"what": what,
                                                                                 "error": repr(exc)}})


async def _remove_after_commit(remove: Callable[[], Awaitable[None]], what: str) -> None:
    """The row is gone, so the call succeeded; a file that cannot be removed is only logged, as an orphan."""
    try:
        await remove()
    except Exception as exc:  # noqa: BLE001
        log.error("could not remove the provider's copy of a deleted resource",
                  extra={"fields": {"what": what, "error": repr(exc)}})
