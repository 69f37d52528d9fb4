"""Moves jobs through their lifecycle (domain/lifecycle.py): taken, beating, retried, given back after an outage,
succeeded, failed, cancelled, timed out; and the backup rows they hold with them. Every task and backup status
is written here and nowhere else. Each end is one transaction: the task's final row, what becomes of its backup,
the resources it held, and the event that tells the other services."""
from __future__ import annotations

import enum
from typing import Callable

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain import errors
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.model import Task
from cbr_backup.service import replication_tasks
from cbr_common import metrics
from cbr_common.db import utcnow
from cbr_common.proto_enums import enum_value

MakeUow = Callable[[], BackupUnitOfWork]


class Take(enum.Enum):
    RUN = "run"        # this worker runs it now
    DONE = "done"      # final already (or made final now): ack
    BUSY = "busy"      # a live worker has it: put back for a lease


async def take(make_uow: MakeUow, project_id: str, task_id: str, worker_id: str, lease_seconds: float,
               max_attempts: int) -> tuple[Take, Task | None]:
    """A worker received the task's job: run it (the attempt counted), leave it to its live owner, or end it
    (cancelled while it waited for a retry, or out of attempts: its workers kept dying)."""
    async with make_uow() as uow:
        task = await uow.tasks.get(project_id, task_id, for_update=True)
        if task is None or task.is_final:
            return Take.DONE, None
        now = utcnow()
        if (task.status == lc.RUNNING and task.worker_id != worker_id
                and lc.owner_alive(task.heartbeat_time, now, lease_seconds)):
            return Take.BUSY, task
        attempt = task.attempts + 1
        if task.extra_info.get("cancel_requested"):
            await cancel_in(uow, task)
        elif attempt > max_attempts:
            await _fail_in(uow, task, lc.TIMEOUT, "BackupService.6760",
                           f"the job's worker stopped answering {max_attempts} times")
        else:
            task.extra_info = dict(task.extra_info, worker=worker_id, attempts=str(attempt))
            await _move(uow, task, lc.RUNNING, attempts=attempt, worker_id=worker_id,
                        started_time=task.started_time or now, heartbeat_time=now, error_code="", error_message="",
                        extra_info=task.extra_info)
            task.attempts, task.worker_id, task.started_time = attempt, worker_id, task.started_time or now
        await uow.commit()
    return (Take.RUN if task.status == lc.RUNNING else Take.DONE), task


async def beat(make_uow: MakeUow, task: Task, done: int, total: int) -> bool:
    """The running job's heartbeat and progress. Returns whether it is to stop (cancelled, or gone)."""
    async with make_uow() as uow:
        # Locked, so that a beat queued behind the transaction that ends this run sees the final row and leaves it.
        latest = await uow.tasks.get(task.project_id, task.task_id, for_update=True)
        if latest is not None and latest.status == lc.RUNNING and (latest.attempts, latest.worker_id) == (
                task.attempts, task.worker_id):
            await uow.tasks.update_fields(task.task_id, heartbeat_time=utcnow(), bytes_done=done,
                                          bytes_total=total, progress=lc.running_percent(done, total))
            await uow.commit()
    return latest is None or bool(latest.extra_info.get("cancel_requested"))


async def retry(make_uow: MakeUow, task: Task, exc: BaseException, code: str = "") -> None:
    """The attempt failed in a way another may cure; it counted. A replication's record hears of it (the
    attempt's own end, once: the record waits for the next attempt)."""
    async with make_uow() as uow:
        extra = dict(task.extra_info, last_error=f"{type(exc).__name__}: {exc}"[:500])
        await _move(uow, task, lc.WAITING, extra_info=extra)
        if task.operation_type == replication_tasks.OPERATION:
            await replication_tasks.publish_end(uow, task, "retrying", code, f"{type(exc).__name__}: {exc}")
        await uow.commit()


async def give_back(make_uow: MakeUow, task: Task, exc: BaseException) -> None:
    """An outage (the database or NATS away) cut the attempt short: the job waits and the attempt is not
    counted. Only if the row is still this run's (another worker may have taken it meanwhile)."""
    async with make_uow() as uow:
        latest = await uow.tasks.get(task.project_id, task.task_id, for_update=True)
        if latest is not None and latest.status == lc.RUNNING and latest.attempts == task.attempts \
                and latest.worker_id == task.worker_id:
            extra = dict(latest.extra_info, last_outage=f"{type(exc).__name__}: {exc}"[:500],
                         attempts=str(task.attempts - 1))
            await _move(uow, latest, lc.WAITING, attempts=task.attempts - 1, extra_info=extra)
            await uow.commit()


async def finish(uow: BackupUnitOfWork, task: Task, status: str, **values) -> None:
    """The task's final row, in the caller's transaction, and the resources it held are free again. Its bytes
    and percent agree (domain/lifecycle.final_progress)."""
    done = values.pop("bytes_done", task.bytes_done)
    total = values.pop("bytes_total", task.bytes_total)
    done, total, percent = lc.final_progress(status, done, total)
    now = utcnow()
    await _move(uow, task, status, ended_time=now, bytes_done=done, bytes_total=total, progress=percent, **values)
    await uow.backups.release_resources(task.task_id)
    uow.after_commit(lambda: metrics.job_ended(task.operation_type, status, task.started_time, now))


async def cancel(make_uow: MakeUow, task: Task) -> None:
    async with make_uow() as uow:
        latest = await uow.tasks.get(task.project_id, task.task_id, for_update=True)
        if latest is not None and not latest.is_final:
            await cancel_in(uow, latest)
            await uow.commit()


async def cancel_in(uow: BackupUnitOfWork, task: Task) -> None:
    """A cancelled backup leaves nothing behind: its rows go (its chunks are garbage for GC) and its task says
    so (backup_id cleared, the id in extra_info["discarded_backup_id"]), so the task never links to a backup
    that is not there. Other jobs leave the backup as it was."""
    values = {}
    if task.operation_type == "backup" and task.backup_id:
        await uow.backups.delete_family(task.backup_id)
        values = {"backup_id": None, "extra_info": dict(task.extra_info, discarded_backup_id=task.backup_id)}
        task.extra_info, task.backup_id = values["extra_info"], ""
    elif task.backup_id:
        await _back_to_available(uow, task)
        await _half_restored_disks_error(uow, task)
    if task.params.get("kind") == "new_disk":  # a disk made for this restore holds a part of it at most
        await uow.inventory.set_disk_status(task.params["disk_id"], "error")
    if task.operation_type == replication_tasks.OPERATION:
        await replication_tasks.publish_end(uow, task, lc.CANCELLED)
    await finish(uow, task, lc.CANCELLED, **values)


async def request_cancel(uow: BackupUnitOfWork, task: Task) -> None:
    """A running job is asked to stop: its worker notices at its next heartbeat and cancels it."""
    task.extra_info = dict(task.extra_info, cancel_requested="true")
    await uow.tasks.update_fields(task.task_id, extra_info=task.extra_info)


async def fail(make_uow: MakeUow, task: Task, status: str, code: str, message: str,
               done: int | None = None, total: int | None = None) -> None:
    async with make_uow() as uow:
        latest = await uow.tasks.get(task.project_id, task.task_id, for_update=True)
        if latest is not None and not latest.is_final:
            await _fail_in(uow, latest, status, code, message, done, total)
            await uow.commit()


async def _fail_in(uow: BackupUnitOfWork, task: Task, status: str, code: str, message: str,
                   done: int | None = None, total: int | None = None) -> None:
    if task.operation_type == "backup" and task.backup_id:
        backup = await uow.backups.get_backup(task.project_id, task.backup_id)
        if backup is not None:
            await move_backup(uow, task.project_id, task.backup_id, lc.ERROR)
        await uow.publish(ev.BackupFailed(
            project_id=task.project_id, backup_id=task.backup_id, vault_id=task.vault_id,
            resource_id=task.resource_id, checkpoint_id=task.checkpoint_id, task_id=task.task_id,
            resource_type=enum_value(common_pb2.ObjectType, backup.resource_type) if backup else 0,
            auto_trigger=bool(backup and backup.auto_trigger), policy_id=task.policy_id, error_code=code,
            error_message=message))
    elif task.operation_type == "restore" and task.backup_id:
        await _back_to_available(uow, task)
        await _half_restored_disks_error(uow, task)
        await uow.publish(ev.RestoreFailed(
            project_id=task.project_id, backup_id=task.backup_id, vault_id=task.vault_id, task_id=task.task_id,
            target_resource_id=task.resource_id, new_disk=task.params.get("kind") == "new_disk",
            error_code=code, error_message=message))
    elif task.operation_type == "delete" and task.backup_id:
        if await uow.backups.get_backup(task.project_id, task.backup_id) is not None:
            await move_backup(uow, task.project_id, task.backup_id, lc.ERROR)
    elif task.operation_type == replication_tasks.OPERATION:
        await replication_tasks.publish_end(uow, task, status, code, message, done, total)
    elif task.operation_type == "vault_delete":  # the vault service marks the vault error, not deleting
        await uow.publish(ev.VaultBackupsPurged(
            project_id=task.project_id, vault_id=task.vault_id, task_id=task.task_id, deleted_count=0,
            failed_count=1))
    if task.params.get("kind") == "new_disk":  # its data never fully arrived
        await uow.inventory.set_disk_status(task.params["disk_id"], "error")
    progress = {} if done is None else {"bytes_done": done, "bytes_total": total}
    await finish(uow, task, status, error_code=code, error_message=message[:2000], **progress)


async def move_backup(uow: BackupUnitOfWork, project_id: str, backup_id: str, status: str, family: bool = True,
                      **values) -> None:
    """Sets a backup's status (with its per-disk children unless family is False), if the move is allowed."""
    backup = await uow.backups.get_backup(project_id, backup_id)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {backup_id} not found")
    lc.check_backup_move(backup_id, backup.status, status)
    update = uow.backups.update_family if family else uow.backups.update_backup
    await update(backup_id, status=status, **values)


async def publish_usage(uow: BackupUnitOfWork, project_id: str, vault_id: str) -> int:
    used = await uow.backups.used_bytes(vault_id)
    await uow.publish(ev.VaultUsageMeasured(
        project_id=project_id, vault_id=vault_id, used_bytes=used,
        resources=[ev.ResourceBackups(**r) for r in await uow.backups.resource_backups(vault_id)]))
    return used


async def _move(uow: BackupUnitOfWork, task: Task, status: str, **values) -> None:
    lc.check_task_move(task.task_id, task.status, status)
    await uow.tasks.update_fields(task.task_id, status=status, **values)
    task.status = status


async def _back_to_available(uow: BackupUnitOfWork, task: Task) -> None:
    """The backup this restore or delete took is free again (only its own job ever takes it: a backup is taken
    only while available)."""
    backup = await uow.backups.get_backup(task.project_id, task.backup_id)
    if backup is not None and backup.status in (lc.RESTORING, lc.WAITING_DELETE, lc.DELETING):
        await uow.backups.update_family(task.backup_id, status=lc.AVAILABLE)


async def _half_restored_disks_error(uow: BackupUnitOfWork, task: Task) -> None:
    """Disks an in-place restore left `restoring` (no restore point to roll back to) hold part of the backup:
    `error`, never `available` (DESIGN.md 7.1)."""
    if task.params.get("kind") not in ("disk", "server"):
        return
    for disk_id in task.params.get("targets", {}).values():
        disk = await uow.inventory.get_disk(task.project_id, disk_id)
        if disk is not None and disk.status == "restoring":
            await uow.inventory.set_disk_status(disk_id, "error")
