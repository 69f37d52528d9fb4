"""How the vault service reacts to other services' events (run by cbr_common's EventConsumer, once each)."""
from __future__ import annotations

from cbr.events.v1 import backup_events_pb2, policy_events_pb2
from cbr.events.v1 import vault_events_pb2 as ev
from cbr_common.jetstream import Subscription
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.domain.model import POLICY_TYPES, PolicyRef


async def on_policy_saved(event, uow: VaultUnitOfWork) -> None:
    if event.operation_type not in POLICY_TYPES:
        return  # not a policy this service can attach to vaults
    await uow.vaults.upsert_policy(PolicyRef(policy_id=event.policy_id, project_id=event.project_id,
                                             operation_type=event.operation_type, name=event.name,
                                             enabled=event.enabled))


async def on_policy_deleted(event: policy_events_pb2.PolicyDeleted, uow: VaultUnitOfWork) -> None:
    for project_id, vault_id in await uow.vaults.forget_policy(event.policy_id):
        await uow.publish("cbr.vault.policy_dissociated", ev.VaultPolicyChanged(
            project_id=project_id, vault_id=vault_id, policy_id=event.policy_id))


async def on_vault_backups_purged(event: backup_events_pb2.VaultBackupsPurged, uow: VaultUnitOfWork) -> None:
    """The last step of a vault deletion: its backups are gone, so its rows go, freeing its resources."""
    vault = await uow.vaults.get(event.project_id, event.vault_id, for_update=True)
    if vault is None or vault.status != "deleting":
        return
    if event.failed_count:
        await uow.vaults.update_fields(vault.vault_id, status="error")
        return
    await uow.vaults.delete(vault.vault_id)
    await uow.publish("cbr.vault.deleted", ev.VaultDeleted(project_id=vault.project_id, vault_id=vault.vault_id))


SUBSCRIPTIONS = [
    Subscription("cbr.policy.created", policy_events_pb2.PolicyCreated, on_policy_saved),
    Subscription("cbr.policy.updated", policy_events_pb2.PolicyUpdated, on_policy_saved),
    Subscription("cbr.policy.deleted", policy_events_pb2.PolicyDeleted, on_policy_deleted),
    Subscription("cbr.backup.vault_purged", backup_events_pb2.VaultBackupsPurged, on_vault_backups_purged),
]
