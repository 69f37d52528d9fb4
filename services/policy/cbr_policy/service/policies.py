"""Policy use cases: each checks every rule first, then writes and queues its event in one transaction."""
from __future__ import annotations

import uuid

from cbr.events.v1 import policy_events_pb2 as ev
from cbr_common.db import utcnow
from cbr_policy.adapters.repository import PolicyFilter
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.domain import errors, rules
from cbr_policy.domain.model import Policy
from cbr_policy.service.commands import CreatePolicy, ListPolicies, UpdatePolicy


async def create_policy(cmd: CreatePolicy, uow: PolicyUnitOfWork, region: str) -> Policy:
    """`region` is this deployment's: a replication policy must name another."""
    rules.check_name(cmd.name)
    rules.check_operation_type(cmd.operation_type)
    definition = rules.check_operation_definition(cmd.operation_type, cmd.operation_definition, region)
    now = utcnow()
    trigger, _ = rules.check_trigger(cmd.trigger, definition.timezone, now)
    policy = Policy(policy_id=str(uuid.uuid4()), project_id=cmd.project_id, name=cmd.name,
                    operation_type=cmd.operation_type, enabled=cmd.enabled, trigger=trigger,
                    operation_definition=definition, created_time=now, updated_time=now)
    async with uow:
        # Held to the commit: a concurrent create in this project counts after this one's insert.
        await uow.policies.lock_project_quota(cmd.project_id)
        if await uow.policies.count(cmd.project_id, cmd.operation_type) >= rules.MAX_POLICIES_PER_TYPE:
            raise errors.TooManyPoliciesError(
                f"a project has at most {rules.MAX_POLICIES_PER_TYPE} {cmd.operation_type} policies")
        await uow.policies.add(policy)
        await uow.publish(ev.PolicyCreated(**_event_fields(policy)))
        await uow.commit()
    return policy


async def get_policy(project_id: str, policy_id: str, uow: PolicyUnitOfWork) -> Policy:
    async with uow:
        return await _policy(uow, project_id, policy_id)


async def list_policies(cmd: ListPolicies, uow: PolicyUnitOfWork) -> tuple[list[Policy], int]:
    limit, offset = rules.check_page(cmd.limit, cmd.offset)
    flt = PolicyFilter(
        project_id=cmd.project_id,
        operation_type=rules.check_operation_type(cmd.operation_type) if cmd.operation_type else "",
        vault_id=rules.check_id(cmd.vault_id, "vault_id") if cmd.vault_id else "")
    async with uow:
        return await uow.policies.list(flt, limit, offset)


async def update_policy(cmd: UpdatePolicy, uow: PolicyUnitOfWork, region: str) -> Policy:
    """Changes what is given; the trigger and the operation definition are replaced whole. The operation type
    cannot change (CBR's is immutable, and UpdatePolicyRequest has no field for it)."""
    policy_id = rules.check_id(cmd.policy_id, "policy_id")
    if cmd.name is not None:
        rules.check_name(cmd.name)
    async with uow:
        policy = await _policy(uow, cmd.project_id, policy_id, for_update=True)
        changed = False
        if cmd.operation_definition is not None:
            policy.operation_definition = rules.check_operation_definition(
                policy.operation_type, cmd.operation_definition, region)
            changed = True
        if cmd.trigger is not None or cmd.operation_definition is not None:
            # A new time zone moves the old trigger's times too: check the pair as it will be stored.
            policy.trigger, _ = rules.check_trigger(cmd.trigger or policy.trigger,
                                                    policy.operation_definition.timezone, policy.created_time)
            changed = True
        if cmd.name is not None:
            policy.name, changed = cmd.name, True
        if cmd.enabled is not None:
            policy.enabled, changed = cmd.enabled, True
        if changed:
            policy.updated_time = utcnow()
            await uow.policies.replace(policy)
            await uow.publish(ev.PolicyUpdated(**_event_fields(policy)))
            await uow.commit()
    return policy


async def delete_policy(project_id: str, policy_id: str, uow: PolicyUnitOfWork) -> None:
    """The policy and its bindings go; the vault service drops it from its vaults when it sees the event."""
    async with uow:
        policy = await _policy(uow, project_id, policy_id, for_update=True)
        await uow.policies.delete(policy.policy_id)
        await uow.publish(ev.PolicyDeleted(project_id=project_id, policy_id=policy.policy_id))
        await uow.commit()


async def _policy(uow: PolicyUnitOfWork, project_id: str, policy_id: str, for_update: bool = False) -> Policy:
    policy = await uow.policies.get(project_id, rules.check_id(policy_id, "policy_id"), for_update=for_update)
    if policy is None:
        raise errors.PolicyNotFoundError(f"policy {policy_id} not found")
    return policy


def _event_fields(policy: Policy) -> dict:
    definition = policy.operation_definition
    return {"project_id": policy.project_id, "policy_id": policy.policy_id, "name": policy.name,
            "operation_type": policy.operation_type, "enabled": policy.enabled,
            "destination_region": definition.destination_region,
            "destination_project_id": definition.destination_project_id}
