"""Backups: list, get, update, and the requests that become jobs (delete, restore, new disk, verify, GC).

Each request is checked completely before anything is written; the job itself runs on a worker
(cbr_backup.worker), which finds everything it needs in the task's params.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Callable

from cbr_backup.adapters.replication_jobs import replication_jobs_of
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import VaultDirectory
from cbr_backup.domain import errors, rules
from cbr_backup.domain.backups import (Backup, BackupFilter, check_backup_name, check_deletable, check_description,
                                       check_grace_seconds, check_restorable, check_target_path)
from cbr_backup.domain.backup_reads import restore_paths
from cbr_backup.domain.model import Disk
from cbr_backup.domain.replication_source import check_not_replicating
from cbr_backup.providers.base import Provider
from cbr_backup.service import jobs, lifecycle
from cbr_backup.service.backup_reads import check_restore_paths
from cbr_backup.service.checkpoints import get_vault
from cbr_common.db import utcnow

MakeUow = Callable[[], BackupUnitOfWork]


@dataclass(frozen=True)
class Mapping:
    backup_id: str   # a per-disk child of the server backup
    volume_id: str   # a disk of the target server


@dataclass(frozen=True)
class RestoreRequest:
    project_id: str
    backup_id: str
    volume_id: str = ""
    server_id: str = ""
    mappings: tuple[Mapping, ...] = ()
    file_system_id: str = ""
    target_path: str = ""
    new_directory: bool = False
    force: bool = False  # in place: even into disks a running client holds (RBD's exclusive lock)
    paths: tuple[bytes, ...] = ()  # file-system backups: only these (and the directories above them)


async def list_backups(flt: BackupFilter, limit: int, offset: int, uow: BackupUnitOfWork) -> tuple[list[Backup], int]:
    limit, offset = rules.check_page(limit, offset)
    rules.check_time_range(flt.start_time, flt.end_time)
    for value, what in ((flt.vault_id, "vault_id"), (flt.resource_id, "resource_id"),
                        (flt.checkpoint_id, "checkpoint_id"), (flt.parent_id, "parent_id")):
        if value:
            rules.check_id(value, what)
    async with uow:
        return await uow.backups.list_backups(flt, limit, offset)


async def get_backup(project_id: str, backup_id: str, uow: BackupUnitOfWork) -> Backup:
    backup_id = rules.check_id(backup_id, "backup_id")
    async with uow:
        return await _backup(uow, project_id, backup_id)


async def update_backup(project_id: str, backup_id: str, name: str | None, description: str | None,
                        uow: BackupUnitOfWork) -> Backup:
    backup_id = rules.check_id(backup_id, "backup_id")
    values = {}
    if name is not None:
        values["name"] = check_backup_name(name)
    if description is not None:
        values["description"] = check_description(description)
    async with uow:
        backup = await _backup(uow, project_id, backup_id, for_update=True)
        if values:
            await uow.backups.update_backup(backup_id, **values)
            await uow.commit()
            backup = await _backup(uow, project_id, backup_id)
    return backup


async def delete_backup(project_id: str, backup_id: str, make_uow: MakeUow, vaults: VaultDirectory) -> str:
    backup_id = rules.check_id(backup_id, "backup_id")
    async with make_uow() as uow:
        backup = await _backup(uow, project_id, backup_id)
    vault = await vaults.get(project_id, backup.vault_id)  # None: the vault is gone; its backups may go too
    async with make_uow() as uow:
        backup = check_deletable(await _backup(uow, project_id, backup_id, for_update=True),
                                 bool(vault and vault.locked), utcnow())
        check_not_replicating(backup_id, await replication_jobs_of(uow).open_task_of_backup(backup_id))
        task = jobs.new_task(project_id, "delete", vault_id=backup.vault_id, vault_name=vault.name if vault else "",
                             resource_id=backup.resource_id, resource_name=backup.resource_name,
                             backup_id=backup_id, checkpoint_id=backup.checkpoint_id)
        await lifecycle.move_backup(uow, project_id, backup_id, "waiting_delete")
        await jobs.enqueue(uow, task)
        await uow.commit()
    return task.task_id


async def restore_backup(req: RestoreRequest, make_uow: MakeUow, provider: Provider, reader=None) -> str:
    """reader (a service.backup_reads.BackupReader): checks that the paths of a selective restore exist."""
    backup_id = rules.check_id(req.backup_id, "backup_id")
    if req.paths:
        req = dataclasses.replace(req, paths=restore_paths(list(req.paths)))
        if reader is not None:
            async with make_uow() as uow:
                kind = (await _backup(uow, req.project_id, backup_id)).resource_type
            if kind == "turbo":
                await check_restore_paths(req.project_id, backup_id, req.paths, make_uow, reader)
    async with make_uow() as uow:
        backup = check_restorable(await _backup(uow, req.project_id, backup_id, for_update=True))
        if backup.parent_id:
            raise errors.InvalidRestoreRequestError(
                f"backup {backup_id} is one disk of server backup {backup.parent_id}: restore that one with "
                f"mappings, or create a disk from this one")
        if backup.resource_type == "disk":
            targets, params = await _disk_restore_target(uow, req, backup)
        elif backup.resource_type == "server":
            targets, params = await _server_restore_targets(uow, req, backup)
        else:
            targets, params = await _file_system_restore_target(uow, req, backup)
        if backup.resource_type != "turbo":
            await _check_not_in_use(provider, req, targets)
            params = dict(params, force=req.force)
        task = jobs.new_task(req.project_id, "restore", vault_id=backup.vault_id, resource_id=targets[0],
                             resource_name=backup.resource_name, backup_id=backup_id,
                             checkpoint_id=backup.checkpoint_id, params=params)
        await _claim(uow, targets, task.task_id)
        await lifecycle.move_backup(uow, req.project_id, backup_id, "restoring")
        await jobs.enqueue(uow, task)
        await uow.commit()
    return task.task_id


async def _check_not_in_use(provider: Provider, req: RestoreRequest, disk_ids: list[str]) -> None:
    """An in-place restore into a disk a running client writes would corrupt what both write: refused before
    anything is recorded, unless the caller forces it (DESIGN.md 15.3)."""
    if req.force:
        return
    for disk_id in disk_ids:
        holders = await provider.disk_in_use(req.project_id, disk_id)
        if holders:
            raise errors.DiskStatusError(
                f"disk {disk_id} is in use ({holders[:160]}): stop its client (detach the volume) first, restore "
                f"to a new disk, or set force to overwrite it anyway")


async def create_disk_from_backup(project_id: str, backup_id: str, name: str, size_bytes: int, make_uow: MakeUow,
                                  provider: Provider) -> tuple[str, str]:
    """Creates the disk at once (empty, sparse); the restore task fills it. Returns (disk_id, task_id).
    An empty name gives "restore-<first 8 characters of the backup id>"."""
    backup_id = rules.check_id(backup_id, "backup_id")
    rules.check_name(name or f"restore-{backup_id[:8]}")
    name = name or f"restore-{backup_id[:8]}"
    if size_bytes:
        rules.check_disk_size(size_bytes)
    rules.check_project_folder(project_id)
    async with make_uow() as uow:
        backup = check_restorable(await _backup(uow, project_id, backup_id))
    if backup.resource_type != "disk":
        raise errors.InvalidRestoreRequestError(
            f"backup {backup_id} is a {backup.resource_type} backup; make disks from disk backups or the "
            f"per-disk backups of a server backup")
    size_bytes = size_bytes or backup.resource_size_bytes
    if size_bytes < backup.resource_size_bytes:
        raise errors.TargetTooSmallError(
            f"size_bytes {size_bytes} is smaller than the backed-up disk ({backup.resource_size_bytes} bytes)")
    disk_id = str(uuid.uuid4())
    path = await provider.create_disk(project_id, disk_id, size_bytes)
    now = utcnow()
    try:
        async with make_uow() as uow:
            backup = check_restorable(await _backup(uow, project_id, backup_id, for_update=True))
            await uow.inventory.add_disk(Disk(disk_id=disk_id, project_id=project_id, name=name,
                                              size_bytes=size_bytes, path=path, created_time=now))
            task = jobs.new_task(project_id, "restore", vault_id=backup.vault_id, resource_id=disk_id,
                                 resource_name=name, backup_id=backup_id, checkpoint_id=backup.checkpoint_id,
                                 params={"kind": "new_disk", "disk_id": disk_id, "size_bytes": size_bytes})
            await _claim(uow, [disk_id], task.task_id)
            await lifecycle.move_backup(uow, project_id, backup_id, "restoring", False)
            await jobs.enqueue(uow, task)
            await uow.commit()
    except BaseException:
        await provider.delete_disk(project_id, disk_id)  # the disk was never recorded: take it back
        raise
    return disk_id, task.task_id


async def verify_backups(project_id: str, vault_id: str, backup_ids: list[str], make_uow: MakeUow,
                         vaults: VaultDirectory) -> str:
    ids = rules.check_id_list(backup_ids, "backup_ids")
    vault = await get_vault(vaults, project_id, vault_id)
    async with make_uow() as uow:
        for backup_id in ids:
            backup = await _backup(uow, project_id, backup_id)
            if backup.vault_id != vault.vault_id:
                raise errors.BackupNotFoundError(f"backup {backup_id} is not in vault {vault.vault_id}")
        task = jobs.new_task(project_id, "verify", vault_id=vault.vault_id, vault_name=vault.name,
                             params={"backup_ids": ids, "encrypted": vault.encrypted})
        await jobs.enqueue(uow, task)
        await uow.commit()
    return task.task_id


async def collect_garbage(project_id: str, vault_id: str, grace_seconds: int | None, make_uow: MakeUow,
                          vaults: VaultDirectory) -> str:
    grace = check_grace_seconds(grace_seconds)
    vault = await get_vault(vaults, project_id, vault_id)
    async with make_uow() as uow:
        task = jobs.new_task(project_id, "gc", vault_id=vault.vault_id, vault_name=vault.name,
                             params={"grace_seconds": grace, "encrypted": vault.encrypted})
        await jobs.enqueue(uow, task)
        await uow.commit()
    return task.task_id


# Restore targets: (resource ids the job will write, params for the worker)

async def _disk_restore_target(uow: BackupUnitOfWork, req: RestoreRequest, backup: Backup):
    if req.server_id or req.mappings or req.file_system_id or req.target_path or req.new_directory or req.paths:
        raise errors.InvalidRestoreRequestError("a disk backup restores to a disk: set volume_id only (or nothing)")
    disk_id = rules.check_id(req.volume_id, "volume_id") if req.volume_id else backup.resource_id
    disk = await _target_disk(uow, req.project_id, disk_id, backup.resource_size_bytes)
    if disk.server_id or disk.status == "in-use":
        raise errors.DiskStatusError(
            f"disk {disk_id} is attached to server {disk.server_id}; detach it (delete the server definition) "
            f"before restoring it, or restore the server backup")
    return [disk_id], {"kind": "disk", "targets": {backup.backup_id: disk_id}}


async def _server_restore_targets(uow: BackupUnitOfWork, req: RestoreRequest, backup: Backup):
    if req.volume_id or req.file_system_id or req.target_path or req.new_directory or req.paths:
        raise errors.InvalidRestoreRequestError("a server backup restores to a server: set server_id and mappings")
    server_id = rules.check_id(req.server_id, "server_id") if req.server_id else backup.resource_id
    server = await uow.inventory.get_server(req.project_id, server_id)
    if server is None:
        raise errors.ServerNotFoundError(f"server {server_id} not found")
    if not req.mappings:
        raise errors.InvalidRestoreRequestError("mappings are required: which disk receives which per-disk backup")
    children = {c.backup_id: c for c in backup.children}
    server_disks = {d.disk_id: d for d in server.disks}
    targets: dict[str, str] = {}
    for m in req.mappings:
        child_id, volume_id = rules.check_id(m.backup_id, "mappings.backup_id"), rules.check_id(m.volume_id,
                                                                                              "mappings.volume_id")
        child = children.get(child_id)
        if child is None:
            raise errors.InvalidRestoreRequestError(f"backup {child_id} is not a disk of server backup {backup.backup_id}")
        if volume_id not in server_disks:
            raise errors.InvalidRestoreRequestError(f"disk {volume_id} is not a disk of server {server_id}")
        if child_id in targets or volume_id in targets.values():
            raise errors.InvalidRestoreRequestError("mappings name a backup or a disk twice")
        if server_disks[volume_id].size_bytes < child.resource_size_bytes:
            raise errors.TargetTooSmallError(
                f"disk {volume_id} ({server_disks[volume_id].size_bytes} bytes) is smaller than the backed-up disk "
                f"({child.resource_size_bytes} bytes)")
        targets[child_id] = volume_id
    return [server_id, *targets.values()], {"kind": "server", "targets": targets}


async def _file_system_restore_target(uow: BackupUnitOfWork, req: RestoreRequest, backup: Backup):
    if req.volume_id or req.server_id or req.mappings:
        raise errors.InvalidRestoreRequestError(
            "a file-system backup restores to a file system: set file_system_id, target_path, new_directory")
    fs_id = rules.check_id(req.file_system_id, "file_system_id") if req.file_system_id else backup.resource_id
    if await uow.inventory.get_file_system(req.project_id, fs_id) is None:
        raise errors.FileSystemNotFoundError(f"file system {fs_id} not found")
    path = check_target_path(req.target_path)
    if req.new_directory:
        path = path / f"restore_{backup.backup_id[:8]}_{utcnow():%Y%m%d%H%M%S}"
    params = {"kind": "turbo", "file_system_id": fs_id, "target_path": str(path) if path.parts else ""}
    if req.paths:
        params["paths"] = [p.hex() for p in req.paths]  # names need not be UTF-8; the params are JSON
    return [fs_id], params


async def _target_disk(uow: BackupUnitOfWork, project_id: str, disk_id: str, needed: int) -> Disk:
    disk = await uow.inventory.get_disk(project_id, disk_id)
    if disk is None:
        raise errors.DiskNotFoundError(f"disk {disk_id} not found")
    if disk.size_bytes < needed:
        raise errors.TargetTooSmallError(
            f"disk {disk_id} ({disk.size_bytes} bytes) is smaller than the backed-up disk ({needed} bytes)")
    return disk


async def _claim(uow: BackupUnitOfWork, resource_ids: list[str], task_id: str) -> None:
    for resource_id in resource_ids:
        if not await uow.backups.claim_resource(resource_id, task_id, "restore"):
            raise errors.ResourceBusyError(f"resource {resource_id} is busy with another backup or restore")


async def _backup(uow: BackupUnitOfWork, project_id: str, backup_id: str, for_update: bool = False) -> Backup:
    backup = await uow.backups.get_backup(project_id, backup_id, for_update=for_update)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {backup_id} not found")
    return backup
