"""How the policy service reacts to other services' events (run by cbr_common's EventConsumer, once each).

The vault service owns the bindings between vaults and policies; this service keeps a projection of them for
GetPolicy's associated_vaults, ListPolicies' vault filter and the scheduler. Events on different subjects come
through different consumers, so they may be applied out of order: each vault's policy slot remembers the time of
the newest change applied, and an older event is dropped.
"""
from __future__ import annotations

import datetime as dt

from cbr.events.v1 import vault_events_pb2 as vault_ev
from cbr_common.jetstream import Subscription
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.domain.model import OPERATION_TYPES


def _occurred(event) -> dt.datetime | None:
    return event.occurred_time.ToDatetime(tzinfo=dt.timezone.utc) if event.HasField("occurred_time") else None


async def on_vault_policy_associated(event: vault_ev.VaultPolicyChanged, uow: PolicyUnitOfWork) -> None:
    when = _occurred(event)
    if when is None:
        return  # malformed: without a time it cannot be ordered against the slot's other changes
    policy = await uow.policies.get(event.project_id, event.policy_id)
    if policy is None or policy.operation_type != event.operation_type:
        return  # deleted since (its bindings went with it), or not a policy of that project and type
    if await uow.policies.claim_binding_change(event.vault_id, policy.operation_type, when):
        await uow.policies.bind(event.project_id, event.vault_id, policy.operation_type, policy.policy_id,
                                event.destination_vault_id, when)


async def on_vault_policy_dissociated(event: vault_ev.VaultPolicyChanged, uow: PolicyUnitOfWork) -> None:
    when = _occurred(event)
    if when is None:
        return
    operation_type = event.operation_type
    if not operation_type:
        # The vault service's dissociations after cbr.policy.deleted carry no type; the policy's row says it,
        # and when the row is gone its bindings went with it.
        policy = await uow.policies.get(event.project_id, event.policy_id)
        if policy is None:
            return
        operation_type = policy.operation_type
    if operation_type not in OPERATION_TYPES:
        return
    if await uow.policies.claim_binding_change(event.vault_id, operation_type, when):
        await uow.policies.unbind(event.project_id, event.vault_id, operation_type, event.policy_id)


async def on_vault_deleted(event: vault_ev.VaultDeleted, uow: PolicyUnitOfWork) -> None:
    """A deleted vault has no policies; the announcement does not come as dissociations."""
    when = _occurred(event)
    if when is None:
        return
    for operation_type in OPERATION_TYPES:
        await uow.policies.claim_binding_change(event.vault_id, operation_type, when)  # late associations drop
    await uow.policies.unbind_vault(event.project_id, event.vault_id)


SUBSCRIPTIONS = [
    Subscription(vault_ev.VaultPolicyChanged, on_vault_policy_associated, "associated"),
    Subscription(vault_ev.VaultPolicyChanged, on_vault_policy_dissociated, "dissociated"),
    Subscription(vault_ev.VaultDeleted, on_vault_deleted),
]
