"""How the backup service reacts to other services' events (run by cbr_common's EventConsumer, once each)."""
from __future__ import annotations

from cbr.events.v1 import replication_events_pb2, vault_events_pb2
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain.model import Task
from cbr_backup.keys import KeyProvider
from cbr_backup.service import change_bases, jobs
from cbr_backup.service.replication_tasks import on_replication_requested
from cbr_backup.service.vault_keys import create_vault_keys
from cbr_common.db import utcnow
from cbr_common.jetstream import Subscription


async def on_vault_delete_requested(event: vault_events_pb2.VaultDeleteRequested, uow: BackupUnitOfWork) -> None:
    """Queues the vault_delete job under the task the vault service named; the worker deletes every backup
    and chunk of the vault and then reports the vault purged (cbr_backup.worker.maintenance)."""
    now = utcnow()
    task = Task(task_id=event.task_id, project_id=event.project_id, operation_type="vault_delete",
                vault_id=event.vault_id, vault_name=event.vault_name, created_time=now, updated_time=now)
    if await uow.tasks.get(event.project_id, event.task_id) is not None:
        return  # queued already (a redelivery under a new event id)
    await jobs.enqueue(uow, task)


def subscriptions(provider: KeyProvider, disks=None) -> list[Subscription]:
    async def on_vault_created(event: vault_events_pb2.VaultCreated, uow: BackupUnitOfWork) -> None:
        """The vault's keys are made as soon as the backup service hears of it, wrapped by the provider's KEK
        (encrypted unless the vault was created asking for it not to be)."""
        await create_vault_keys(uow, provider, event.vault_id, event.encrypted)

    async def on_resources_removed(event: vault_events_pb2.VaultResourcesChanged, uow: BackupUnitOfWork) -> None:
        """Disks that left a vault keep no change base of it (DESIGN.md 16.2)."""
        await change_bases.release_left_vault(uow, disks, event.project_id, event.vault_id, event.resource_ids)

    async def on_resources_migrated(event: vault_events_pb2.VaultResourcesMigrated, uow: BackupUnitOfWork) -> None:
        await change_bases.release_left_vault(uow, disks, event.project_id, event.source_vault_id,
                                              event.resource_ids)

    return [
        Subscription(vault_events_pb2.VaultCreated, on_vault_created),
        Subscription(vault_events_pb2.VaultDeleteRequested, on_vault_delete_requested),
        Subscription(replication_events_pb2.ReplicationRequested, on_replication_requested),
    ] + ([Subscription(vault_events_pb2.VaultResourcesChanged, on_resources_removed, kind="removed"),
          Subscription(vault_events_pb2.VaultResourcesMigrated, on_resources_migrated)]
         if disks is not None else [])
