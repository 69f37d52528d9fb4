"""How the vault service reacts to other services' events (run by cbr_common's EventConsumer, once each)."""
from __future__ import annotations

import datetime as dt

from cbr.events.v1 import backup_events_pb2, policy_events_pb2
from cbr.events.v1 import vault_events_pb2 as ev
from cbr_common.jetstream import Subscription
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.domain import rules
from cbr_vault.domain.model import POLICY_TYPES, PolicyRef
from cbr_vault.service.vaults import UNWRITABLE_STATUSES


async def on_policy_saved(event, uow: VaultUnitOfWork) -> None:
    if event.operation_type not in POLICY_TYPES:
        return  # not a policy this service can attach to vaults
    await uow.vaults.upsert_policy(PolicyRef(policy_id=event.policy_id, project_id=event.project_id,
                                             operation_type=event.operation_type, name=event.name,
                                             enabled=event.enabled))


async def on_policy_deleted(event: policy_events_pb2.PolicyDeleted, uow: VaultUnitOfWork) -> None:
    for project_id, vault_id in await uow.vaults.forget_policy(event.policy_id):
        await uow.publish(ev.VaultPolicyChanged(
            project_id=project_id, vault_id=vault_id, policy_id=event.policy_id), "dissociated")


async def on_vault_backups_purged(event: backup_events_pb2.VaultBackupsPurged, uow: VaultUnitOfWork) -> None:
    """The last step of a vault deletion: its backups are gone, so its rows go, freeing its resources."""
    vault = await uow.vaults.get(event.project_id, event.vault_id, for_update=True)
    if vault is None or vault.status != "deleting":
        return
    if event.failed_count:
        await uow.vaults.update_fields(vault.vault_id, status="error")
        return
    await uow.vaults.delete(vault.vault_id)
    await uow.publish(ev.VaultDeleted(project_id=vault.project_id, vault_id=vault.vault_id))


async def on_vault_usage_measured(event: backup_events_pb2.VaultUsageMeasured, uow: VaultUnitOfWork) -> None:
    """Keeps the newest measurement (they may arrive late or twice), with each resource's backup count and
    size, and grows an auto-expanding vault to hold it."""
    if not event.HasField("occurred_time") or event.used_bytes < 0:
        return  # malformed: without a time it cannot be ordered against the other measurements
    measured_time = event.occurred_time.ToDatetime(tzinfo=dt.timezone.utc)
    vault = await uow.vaults.get(event.project_id, event.vault_id, for_update=True)
    if vault is None:
        return  # deleted since, or not a vault of that project
    if vault.used_measured_time is not None and measured_time <= vault.used_measured_time:
        return
    await uow.vaults.record_usage(vault.vault_id, event.used_bytes, measured_time)
    await uow.vaults.record_resource_backups(vault.vault_id, {
        r.resource_id: (max(r.backup_count, 0), max(r.backup_size_bytes, 0)) for r in event.resources})
    if not vault.auto_expand or vault.status in UNWRITABLE_STATUSES:
        return  # a deleting or frozen vault takes no size changes, as in update_vault
    size_gb = rules.expanded_size_gb(vault.size_gb, event.used_bytes)
    if size_gb != vault.size_gb:
        await uow.vaults.update_fields(vault.vault_id, size_gb=size_gb)
        await uow.publish(ev.VaultUpdated(
            project_id=vault.project_id, vault_id=vault.vault_id, size_gb=size_gb, auto_expand=vault.auto_expand,
            locked=vault.locked))


SUBSCRIPTIONS = [
    Subscription(policy_events_pb2.PolicyCreated, on_policy_saved),
    Subscription(policy_events_pb2.PolicyUpdated, on_policy_saved),
    Subscription(policy_events_pb2.PolicyDeleted, on_policy_deleted),
    Subscription(backup_events_pb2.VaultBackupsPurged, on_vault_backups_purged),
    Subscription(backup_events_pb2.VaultUsageMeasured, on_vault_usage_measured),
]
