"""How a job ends, written in one transaction each: the task's final status, what becomes of its backup rows,
the resources it held, and the event that tells the other services."""
from __future__ import annotations

from typing import Callable

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain.model import Task
from cbr_common.db import utcnow
from cbr_common.proto_enums import enum_value

MakeUow = Callable[[], BackupUnitOfWork]


async def finish(uow: BackupUnitOfWork, task: Task, status: str, **values) -> None:
    """The task's final row, and the resources it held are free again."""
    now = utcnow()
    values.setdefault("progress", 100 if status == "success" else task.progress)
    await uow.tasks.update_fields(task.task_id, status=status, ended_time=now, updated_time=now, **values)
    await uow.backups.release_resources(task.task_id)
    task.status = status


async def cancelled(make_uow: MakeUow, task: Task) -> None:
    async with make_uow() as uow:
        await undo_cancelled(uow, task)
        await finish(uow, task, "cancelled")
        await uow.commit()


async def undo_cancelled(uow: BackupUnitOfWork, task: Task) -> None:
    """A cancelled backup leaves nothing behind (its chunks are garbage for GC); other jobs leave the backup
    as it was."""
    if task.operation_type == "backup" and task.backup_id:
        await uow.backups.delete_family(task.backup_id)
    elif task.backup_id:
        await _back_to_available(uow, task)
        await _half_restored_disks_error(uow, task)
    if task.params.get("kind") == "new_disk":  # a disk made for this restore holds a part of it at most
        await uow.inventory.set_disk_status(task.params["disk_id"], "error")


async def failed(make_uow: MakeUow, task: Task, status: str, code: str, message: str) -> None:
    async with make_uow() as uow:
        if task.operation_type == "backup" and task.backup_id:
            await uow.backups.update_family(task.backup_id, status="error")
            backup = await uow.backups.get_backup(task.project_id, task.backup_id)
            await uow.publish("cbr.backup.failed", ev.BackupFailed(
                project_id=task.project_id, backup_id=task.backup_id, vault_id=task.vault_id,
                resource_id=task.resource_id, checkpoint_id=task.checkpoint_id, task_id=task.task_id,
                resource_type=enum_value(common_pb2.ObjectType, backup.resource_type) if backup else 0,
                auto_trigger=bool(backup and backup.auto_trigger), policy_id=task.policy_id, error_code=code,
                error_message=message))
        elif task.operation_type == "restore" and task.backup_id:
            await _back_to_available(uow, task)
            await _half_restored_disks_error(uow, task)
            await uow.publish("cbr.restore.failed", ev.RestoreFailed(
                project_id=task.project_id, backup_id=task.backup_id, vault_id=task.vault_id, task_id=task.task_id,
                target_resource_id=task.resource_id, new_disk=task.params.get("kind") == "new_disk",
                error_code=code, error_message=message))
        elif task.operation_type == "delete" and task.backup_id:
            await uow.backups.update_family(task.backup_id, status="error")
        elif task.operation_type == "vault_delete":  # the vault service marks the vault error, not deleting
            await uow.publish("cbr.backup.vault_purged", ev.VaultBackupsPurged(
                project_id=task.project_id, vault_id=task.vault_id, task_id=task.task_id, deleted_count=0,
                failed_count=1))
        if task.params.get("kind") == "new_disk":  # its data never fully arrived
            await uow.inventory.set_disk_status(task.params["disk_id"], "error")
        await finish(uow, task, status, error_code=code, error_message=message[:2000])
        await uow.commit()


async def retry_later(make_uow: MakeUow, task: Task, exc: BaseException) -> None:
    async with make_uow() as uow:
        extra = dict(task.extra_info, last_error=f"{type(exc).__name__}: {exc}"[:500])
        await uow.tasks.update_fields(task.task_id, status="waiting", extra_info=extra)
        await uow.commit()


async def publish_usage(uow: BackupUnitOfWork, project_id: str, vault_id: str) -> int:
    used = await uow.backups.used_bytes(vault_id)
    await uow.publish("cbr.backup.vault_usage", ev.VaultUsageMeasured(
        project_id=project_id, vault_id=vault_id, used_bytes=used,
        resources=[ev.ResourceBackups(**r) for r in await uow.backups.resource_backups(vault_id)]))
    return used


async def _back_to_available(uow: BackupUnitOfWork, task: Task) -> None:
    """The backup this restore or delete took is free again (only its own job ever takes it: a backup is taken
    only while available)."""
    backup = await uow.backups.get_backup(task.project_id, task.backup_id)
    if backup is not None and backup.status in ("restoring", "waiting_delete", "deleting"):
        await uow.backups.update_family(task.backup_id, status="available")


async def _half_restored_disks_error(uow: BackupUnitOfWork, task: Task) -> None:
    """Disks an in-place restore left `restoring` (no restore point to roll back to) hold part of the backup:
    `error`, never `available` (DESIGN.md 7.1)."""
    if task.params.get("kind") not in ("disk", "server"):
        return
    for disk_id in task.params.get("targets", {}).values():
        disk = await uow.inventory.get_disk(task.project_id, disk_id)
        if disk is not None and disk.status == "restoring":
            await uow.inventory.set_disk_status(disk_id, "error")
