"""CreateCheckpoint / GetCheckpoint: back up some or all of a vault's resources now, one job per resource.

Every request check runs before anything is written. Resources that cannot be backed up now (gone, in
error, already busy with another job) are reported as skipped with a code; the others each get a backup row
(a server backup also one child row per disk), a backup task and a job, in one transaction.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Callable

from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.adapters.vaults import VaultDirectory, VaultInfo, VaultResource
from cbr_backup.domain import errors, rules
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.backups import (MAX_CHECKPOINT_RESOURCES, Backup, Checkpoint, Room, SkippedResource,
                                       check_backup_name, check_description, check_request_id,
                                       default_backup_name)
from cbr_backup.service import jobs
from cbr_common.db import utcnow
from cbr_common.errors import CbrError


@dataclass(frozen=True)
class CreateCheckpoint:
    project_id: str
    vault_id: str
    resource_ids: tuple[str, ...] = ()
    excludes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per server: disks left out
    incremental: bool = True
    name: str = ""
    description: str = ""
    auto_trigger: bool = False
    policy_id: str = ""
    retention_duration_days: int = 0  # the policy's age rule: backups expire this many days after they are taken
    request_id: str = ""              # idempotency key: a repeated call returns the first call's checkpoint


async def get_vault(vaults: VaultDirectory, project_id: str, vault_id: str) -> VaultInfo:
    vault = await vaults.get(project_id, rules.check_id(vault_id, "vault_id"))
    if vault is None:
        raise errors.VaultNotFoundError(f"vault {vault_id} not found")
    return vault


def _check_request(cmd: CreateCheckpoint) -> CreateCheckpoint:
    rules.check_id(cmd.vault_id, "vault_id")
    ids = [rules.check_id(r, "resource_id") for r in cmd.resource_ids]
    if len(ids) > MAX_CHECKPOINT_RESOURCES:
        raise errors.InvalidResourceListError(f"at most {MAX_CHECKPOINT_RESOURCES} resources per checkpoint")
    if len(set(ids)) != len(ids):
        raise errors.InvalidResourceListError("resource_ids name a resource twice")
    for resource_id, disks in cmd.excludes.items():
        rules.check_id(resource_id, "resource_details.resource_id")
        for disk_id in disks:
            rules.check_id(disk_id, "exclude_volumes")
    if cmd.name:
        check_backup_name(cmd.name)
    check_description(cmd.description)
    if cmd.policy_id:
        rules.check_id(cmd.policy_id, "policy_id")
    check_request_id(cmd.request_id)
    if not 0 <= cmd.retention_duration_days <= 99999:
        raise errors.InvalidRetentionDaysError("retention_duration_days must be 0 (no expiry) or 1..99999")
    return cmd


def _chosen(cmd: CreateCheckpoint, vault: VaultInfo) -> list[VaultResource]:
    if vault.protect_type != "backup":
        raise errors.VaultStateError(f"vault {vault.vault_id} is a replication vault; it takes no backups")
    if vault.status in ("frozen", "deleting", "error"):
        raise errors.VaultStateError(f"vault {vault.vault_id} is {vault.status}; it takes no backups")
    if not cmd.resource_ids:
        if not vault.resources:
            raise errors.InvalidResourceListError(f"vault {vault.vault_id} has no resources to back up")
        return list(vault.resources)
    chosen = []
    for resource_id in cmd.resource_ids:
        resource = vault.resource(resource_id)
        if resource is None:
            raise errors.InvalidResourceListError(f"resource {resource_id} is not in vault {vault.vault_id}")
        chosen.append(resource)
    for resource_id in cmd.excludes:
        if vault.resource(resource_id) is None:
            raise errors.InvalidResourceListError(f"resource {resource_id} is not in vault {vault.vault_id}")
    return chosen


async def create_checkpoint(cmd: CreateCheckpoint, make_uow: Callable[[], BackupUnitOfWork],
                            vaults: VaultDirectory) -> Checkpoint:
    cmd = _check_request(cmd)
    vault = await get_vault(vaults, cmd.project_id, cmd.vault_id)
    resources = _chosen(cmd, vault)
    now = utcnow()
    cp = Checkpoint(checkpoint_id=str(uuid.uuid4()), project_id=cmd.project_id, vault_id=vault.vault_id,
                    name=cmd.name or default_backup_name(cmd.auto_trigger, now), description=cmd.description,
                    incremental=cmd.incremental, auto_trigger=cmd.auto_trigger, policy_id=cmd.policy_id,
                    created_time=now, request_id=cmd.request_id)
    expires = now + dt.timedelta(days=cmd.retention_duration_days) if cmd.retention_duration_days else None
    async with make_uow() as uow:
        if cmd.request_id:
            earlier = await uow.backups.checkpoint_for_request(cmd.project_id, cmd.request_id)
            if earlier is not None:
                first = await uow.backups.get_checkpoint(cmd.project_id, earlier)
                if first.vault_id != vault.vault_id:
                    raise errors.RequestIdReusedError(
                        f"request_id {cmd.request_id} made checkpoint {earlier} of another vault")
                return first
        room = Room(await uow.backups.used_bytes(vault.vault_id), vault.size_gb, vault.auto_expand)
        room.check(0)  # a full vault refuses the whole checkpoint
        for resource in resources:
            excluded = set(resource.exclude_volumes) | set(cmd.excludes.get(resource.resource_id, ()))
            backup_or_skip = await _start_backup(uow, cp, vault, resource, excluded, expires, room)
            if isinstance(backup_or_skip, SkippedResource):
                cp.skipped.append(backup_or_skip)
            else:
                cp.backups.append(backup_or_skip)
        # What will happen: incremental if any of its backups has an earlier one to read only changes against.
        cp.incremental = any(b.incremental for b in cp.backups)
        await uow.backups.add_checkpoint(cp)
        await uow.commit()
    return cp


async def _start_backup(uow: BackupUnitOfWork, cp: Checkpoint, vault: VaultInfo, resource: VaultResource,
                        excluded: set[str], expires: dt.datetime | None, room: Room) -> Backup | SkippedResource:
    def skip(error: CbrError) -> SkippedResource:
        return SkippedResource(resource.resource_id, resource.type, resource.name, error.cbr_code, str(error))

    found = await _resource(uow, cp.project_id, resource)
    if isinstance(found, CbrError):
        return skip(found)
    name, size, disks = found
    if resource.type == "server":
        disks = [d for d in disks if d.disk_id not in excluded]
        if not disks:
            return skip(errors.InvalidServerDisksError(f"every disk of server {resource.resource_id} is excluded"))
    # Incremental only where an earlier backup exists to compare with (the worker reads only changes then).
    kind = {"disk": "disk", "turbo": "tree"}.get(resource.type, "")
    if resource.type == "server":
        disk_incremental = {d.disk_id: await _has_base(uow, cp, vault.vault_id, d.disk_id, "disk") for d in disks}
        incremental = any(disk_incremental.values())
        full_bytes = sum(d.size_bytes for d in disks if not disk_incremental[d.disk_id])
    else:
        incremental = await _has_base(uow, cp, vault.vault_id, resource.resource_id, kind)
        full_bytes = 0 if incremental else size
    try:
        room.check(full_bytes)
    except errors.VaultFullError as error:
        return skip(error)
    task = jobs.new_task(cp.project_id, "backup", vault_id=vault.vault_id, vault_name=vault.name,
                         resource_id=resource.resource_id, resource_name=name, checkpoint_id=cp.checkpoint_id,
                         policy_id=cp.policy_id,
                         params={"incremental": incremental, "size_gb": vault.size_gb,
                                 "auto_expand": vault.auto_expand, "encrypted": vault.encrypted})
    if not await uow.backups.claim_resource(resource.resource_id, task.task_id, "backup"):
        return skip(errors.ResourceBusyError(f"resource {resource.resource_id} is busy with another backup or restore"))
    room.take(full_bytes)
    backup = Backup(backup_id=str(uuid.uuid4()), project_id=cp.project_id, checkpoint_id=cp.checkpoint_id,
                    vault_id=vault.vault_id, resource_id=resource.resource_id, resource_type=resource.type,
                    name=cp.name, description=cp.description, status=lc.WAITING_PROTECT, resource_name=name,
                    resource_size_bytes=size, incremental=incremental, auto_trigger=cp.auto_trigger,
                    policy_id=cp.policy_id, manifest_kind=kind,
                    task_id=task.task_id, created_time=cp.created_time, updated_time=cp.created_time,
                    expired_time=expires)
    task.backup_id = backup.backup_id
    await uow.backups.add_backup(backup)
    for disk in disks:
        child = Backup(backup_id=str(uuid.uuid4()), project_id=cp.project_id, checkpoint_id=cp.checkpoint_id,
                       vault_id=vault.vault_id, resource_id=disk.disk_id, resource_type="disk", name=cp.name,
                       description=cp.description, status=lc.WAITING_PROTECT, resource_name=disk.name,
                       resource_size_bytes=disk.size_bytes, parent_id=backup.backup_id, device=disk.device,
                       incremental=disk_incremental[disk.disk_id], auto_trigger=cp.auto_trigger,
                       policy_id=cp.policy_id, manifest_kind="disk", task_id=task.task_id, created_time=cp.created_time,
                       updated_time=cp.created_time, expired_time=expires)
        await uow.backups.add_backup(child)
        backup.children.append(child)
    await jobs.enqueue(uow, task)
    return backup


async def _has_base(uow: BackupUnitOfWork, cp: Checkpoint, vault_id: str, resource_id: str, kind: str) -> bool:
    """Whether the backup will be incremental: asked for, and an available backup of the resource in the vault
    is there to read only the changes against (the one the worker will use, unless it goes meanwhile)."""
    return cp.incremental and await uow.backups.latest_with_manifest(vault_id, resource_id, kind) is not None


async def _resource(uow: BackupUnitOfWork, project_id: str, resource: VaultResource):
    """(name, size, disks) of the resource as the inventory has it now, or the error that skips it."""
    if resource.type == "disk":
        disk = await uow.inventory.get_disk(project_id, resource.resource_id)
        if disk is None:
            return errors.DiskNotFoundError(f"disk {resource.resource_id} no longer exists")
        if disk.status == "error":
            return errors.DiskStatusError(f"disk {disk.disk_id} is in error")
        return disk.name, disk.size_bytes, []
    if resource.type == "server":
        server = await uow.inventory.get_server(project_id, resource.resource_id)
        if server is None:
            return errors.ServerNotFoundError(f"server {resource.resource_id} no longer exists")
        return server.name, server.size_bytes, list(server.disks)
    fs = await uow.inventory.get_file_system(project_id, resource.resource_id)
    if fs is None:
        return errors.FileSystemNotFoundError(f"file system {resource.resource_id} no longer exists")
    return fs.name, 0, []


async def get_checkpoint(project_id: str, checkpoint_id: str, uow: BackupUnitOfWork) -> Checkpoint:
    checkpoint_id = rules.check_id(checkpoint_id, "checkpoint_id")
    async with uow:
        cp = await uow.backups.get_checkpoint(project_id, checkpoint_id)
    if cp is None:
        raise errors.CheckpointNotFoundError(f"checkpoint {checkpoint_id} not found")
    return cp
