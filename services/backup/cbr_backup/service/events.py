"""How the backup service reacts to other services' events (run by cbr_common's EventConsumer, once each)."""
from __future__ import annotations

from cbr.events.v1 import backup_events_pb2 as ev
from cbr.events.v1 import vault_events_pb2
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain.model import Task
from cbr_common.db import utcnow
from cbr_common.jetstream import Subscription


async def on_vault_delete_requested(event: vault_events_pb2.VaultDeleteRequested, uow: BackupUnitOfWork) -> None:
    """Deletes the vault's backups under the task the vault service named, then reports the vault purged."""
    now = utcnow()
    # TODO(backups): delete the vault's backups here (each one as the DeleteBackup use case does, counting
    # deleted and failed ones into the task's extra_info and the event below), turning this task into a job
    # from the work queue once deleting takes time. There are no backups yet, so there is nothing to delete.
    deleted, failed = 0, 0
    task = Task(task_id=event.task_id, project_id=event.project_id, operation_type="vault_delete",
                status="success", progress=100, vault_id=event.vault_id, vault_name=event.vault_name,
                extra_info={"fail_count": str(failed), "total_count": str(deleted + failed)},
                created_time=now, started_time=now, ended_time=now, updated_time=now)
    if not await uow.tasks.add(task):
        return  # this task ran already (a redelivery under a new event id): its event went out with it
    await uow.publish("cbr.backup.vault_purged", ev.VaultBackupsPurged(
        project_id=event.project_id, vault_id=event.vault_id, task_id=event.task_id, deleted_count=deleted,
        failed_count=failed))


SUBSCRIPTIONS = [
    Subscription("cbr.vault.delete_requested", vault_events_pb2.VaultDeleteRequested, on_vault_delete_requested),
]
