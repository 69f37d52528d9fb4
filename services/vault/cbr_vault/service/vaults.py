"""Vault use cases: each checks every rule first, then writes and queues its event in one transaction."""
from __future__ import annotations

import contextlib
import uuid
from typing import Sequence

from sqlalchemy.exc import IntegrityError

from cbr.events.v1 import vault_events_pb2 as ev
from cbr.common.v1 import common_pb2
from cbr_common.db import utcnow
from cbr_common.echo import short
from cbr_vault.adapters.policies import PolicyDirectory
from cbr_vault.adapters.protectables import ProtectableDirectory
from cbr_vault.adapters.repository import VaultFilter
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.domain import errors, rules
from cbr_vault.domain.model import Tag, Vault, VaultResource
from cbr_vault.service.commands import CreateVault, ListVaults, ResourceSpec, UpdateVault

OBJECT_TYPE_EVENT = {"server": common_pb2.OBJECT_TYPE_SERVER, "disk": common_pb2.OBJECT_TYPE_DISK,
                     "turbo": common_pb2.OBJECT_TYPE_TURBO}
UNWRITABLE_STATUSES = ("deleting", "frozen")


async def create_vault(cmd: CreateVault, uow: VaultUnitOfWork, directory: ProtectableDirectory,
                       policies: PolicyDirectory | None = None) -> Vault:
    rules.check_name(cmd.name)
    rules.check_description(cmd.description)
    rules.check_types(cmd.object_type, cmd.protect_type, cmd.consistent_level)
    rules.check_size_gb(cmd.size_gb)
    rules.check_threshold(cmd.threshold)
    rules.check_tags(cmd.tags)
    rules.check_bind_rules(cmd.bind_rules)
    now = utcnow()
    vault = Vault(vault_id=str(uuid.uuid4()), project_id=cmd.project_id, name=cmd.name,
                  description=cmd.description, object_type=cmd.object_type, protect_type=cmd.protect_type,
                  consistent_level=cmd.consistent_level, size_gb=cmd.size_gb, auto_expand=cmd.auto_expand,
                  auto_bind=cmd.auto_bind, bind_rules=list(cmd.bind_rules), smn_notify=cmd.smn_notify,
                  threshold=cmd.threshold, locked=cmd.locked, encrypted=cmd.encrypted, tags=list(cmd.tags),
                  created_time=now, updated_time=now)
    async with uow:
        if cmd.resources:
            vault.resources = await _checked_new_resources(vault, cmd.resources, uow, directory)
        if cmd.backup_policy_id:
            policy = await _policy(uow, cmd.project_id, cmd.backup_policy_id, policies)
            if policy.operation_type != "backup":
                raise errors.PolicyNotApplicableError("backup_policy_id names a replication policy")
            _check_policy_fits(vault, policy.operation_type)
            vault.backup_policy_id = policy.policy_id
        with _one_vault_per_resource():
            await uow.vaults.add(vault)
            await uow.publish(ev.VaultCreated(
                project_id=vault.project_id, vault_id=vault.vault_id,
                object_type=OBJECT_TYPE_EVENT[vault.object_type], protect_type=vault.protect_type,
                encrypted=vault.encrypted))
            if vault.resources:
                await _publish_resources(uow, "added", vault,
                                         [r.resource_id for r in vault.resources])
            if vault.backup_policy_id:
                await uow.publish(ev.VaultPolicyChanged(
                    project_id=vault.project_id, vault_id=vault.vault_id, policy_id=vault.backup_policy_id,
                    operation_type="backup"), "associated")
            await uow.commit()
    if vault.resources:
        gone = await _deleted_meanwhile(vault, vault.resources, directory)
        if gone:  # the vault stays, without them
            await _take_back(uow, vault, gone)
            vault.resources = [r for r in vault.resources if r.resource_id not in gone]
    return vault


async def get_vault(project_id: str, vault_id: str, uow: VaultUnitOfWork) -> Vault:
    vault_id = rules.check_id(vault_id, "vault_id")
    async with uow.reads() as reads:
        vault = await reads.get(project_id, vault_id)
    if vault is None:
        raise errors.VaultNotFoundError(f"vault {vault_id} not found")
    return vault


async def list_vaults(cmd: ListVaults, uow: VaultUnitOfWork) -> tuple[list[Vault], int]:
    limit, offset = rules.check_page(cmd.limit, cmd.offset)
    flt = VaultFilter(project_id=cmd.project_id, name=cmd.name, object_type=cmd.object_type,
                      protect_type=cmd.protect_type, status=cmd.status,
                      policy_id=rules.check_id(cmd.policy_id, "policy_id") if cmd.policy_id else "",
                      resource_ids=tuple(rules.check_id_list(cmd.resource_ids, "resource_id")),
                      vault_ids=tuple(rules.check_id_list(cmd.vault_ids, "vault_id")))
    async with uow.reads() as reads:
        return await reads.list(flt, limit, offset)


async def update_vault(cmd: UpdateVault, uow: VaultUnitOfWork) -> Vault:
    changes: dict = {}
    if cmd.name is not None:
        changes["name"] = rules.check_name(cmd.name)
    if cmd.description is not None:
        changes["description"] = rules.check_description(cmd.description)
    if cmd.size_gb is not None:
        changes["size_gb"] = rules.check_size_gb(cmd.size_gb)
    if cmd.threshold is not None:
        changes["threshold"] = rules.check_threshold(cmd.threshold)
    for flag in ("auto_expand", "auto_bind", "smn_notify", "locked"):
        if getattr(cmd, flag) is not None:
            changes[flag] = getattr(cmd, flag)
    async with uow:
        vault = await _writable_vault(uow, cmd.project_id, cmd.vault_id)
        if vault.locked and changes.get("locked") is False:
            raise errors.VaultLockedError("backup locking cannot be disabled once enabled")
        if "size_gb" in changes and changes["size_gb"] * rules.GIB < vault.used_bytes:
            raise errors.CapacityBelowUsageError(
                f"size_gb {changes['size_gb']} is below the {vault.used_bytes} bytes already used")
        if changes:
            await uow.vaults.update_fields(vault.vault_id, **changes)
            vault = await _vault(uow, cmd.project_id, cmd.vault_id)
            await uow.publish(ev.VaultUpdated(
                project_id=vault.project_id, vault_id=vault.vault_id, size_gb=vault.size_gb,
                auto_expand=vault.auto_expand, locked=vault.locked))
        await uow.commit()
    return vault


async def delete_vault(project_id: str, vault_id: str, uow: VaultUnitOfWork) -> str:
    """Marks the vault deleting and asks the backup service to delete its backups; returns the task id."""
    async with uow:
        vault = await _vault(uow, project_id, vault_id, for_update=True)
        if vault.status not in ("available", "error"):
            raise errors.VaultStatusError(f"a vault in status {vault.status} cannot be deleted")
        if vault.locked:
            # WORM: deleting it would delete automatic backups before they expire.
            raise errors.VaultLockedError("a locked vault cannot be deleted")
        task_id = str(uuid.uuid4())
        await uow.vaults.update_fields(vault.vault_id, status="deleting")
        await uow.publish(ev.VaultDeleteRequested(
            project_id=project_id, vault_id=vault.vault_id, vault_name=vault.name, task_id=task_id))
        await uow.commit()
    return task_id


async def add_resources(project_id: str, vault_id: str, specs: Sequence[ResourceSpec], uow: VaultUnitOfWork,
                        directory: ProtectableDirectory) -> list[str]:
    if not specs:
        raise errors.EmptyResourceListError("give at least one resource")
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        resources = await _checked_new_resources(vault, specs, uow, directory)
        ids = [r.resource_id for r in resources]
        with _one_vault_per_resource():
            await uow.vaults.add_resources(vault.vault_id, project_id, resources)
            await _publish_resources(uow, "added", vault, ids)
            await uow.commit()
    gone = await _deleted_meanwhile(vault, resources, directory)
    if gone:  # the call adds all or nothing
        await _take_back(uow, vault, ids)
        raise errors.ResourceNotFoundError(f"resource {gone[0]} was deleted while it was being added; "
                                           f"nothing was added")
    return ids


async def remove_resources(project_id: str, vault_id: str, resource_ids: Sequence[str],
                           uow: VaultUnitOfWork) -> list[str]:
    if not resource_ids:
        raise errors.EmptyResourceListError("give at least one resource id")
    ids = rules.check_ids(resource_ids, "resource_id")
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        if vault.locked:
            raise errors.VaultLockedError("resources cannot be removed from a locked vault")
        _require_held(vault, ids)
        await uow.vaults.remove_resources(vault.vault_id, ids)
        await _publish_resources(uow, "removed", vault, ids)
        await uow.commit()
    return ids


async def migrate_resources(project_id: str, vault_id: str, destination_vault_id: str,
                            resource_ids: Sequence[str], uow: VaultUnitOfWork) -> list[str]:
    if not resource_ids:
        raise errors.EmptyResourceListError("give at least one resource id")
    ids = rules.check_ids(resource_ids, "resource_id")
    destination_vault_id = rules.check_id(destination_vault_id, "destination_vault_id")
    if destination_vault_id == vault_id:
        raise errors.InvalidMigrationError("the destination vault is the source vault")
    async with uow:
        # Lock both rows in id order, so two opposite migrations cannot deadlock.
        locked = {}
        for vid in sorted((vault_id, destination_vault_id)):
            locked[vid] = await _writable_vault(uow, project_id, vid)
        source, destination = locked[vault_id], locked[destination_vault_id]
        if source.locked:
            raise errors.VaultLockedError("resources cannot be migrated out of a locked vault")
        if (source.object_type, source.protect_type) != (destination.object_type, destination.protect_type):
            raise errors.ResourceTypeMismatchError(
                f"cannot migrate from a {source.object_type} {source.protect_type} vault to a "
                f"{destination.object_type} {destination.protect_type} vault")
        _require_held(source, ids)
        if len(destination.resources) + len(ids) > rules.MAX_RESOURCES:
            raise errors.TooManyResourcesError(f"a vault holds at most {rules.MAX_RESOURCES} resources")
        await uow.vaults.move_resources(source.vault_id, destination.vault_id, ids)
        await uow.publish(ev.VaultResourcesMigrated(
            project_id=project_id, source_vault_id=source.vault_id, destination_vault_id=destination.vault_id,
            resource_ids=ids))
        await uow.commit()
    return ids


async def associate_policy(project_id: str, vault_id: str, policy_id: str, destination_vault_id: str,
                           uow: VaultUnitOfWork, policies: PolicyDirectory | None = None) -> None:
    policy_id = rules.check_id(policy_id, "policy_id")
    if destination_vault_id:
        destination_vault_id = rules.check_id(destination_vault_id, "destination_vault_id")
    async with uow:
        policy = await _policy(uow, project_id, policy_id, policies)  # before the vault's row lock: it may call out
        vault = await _writable_vault(uow, project_id, vault_id)
        _check_policy_fits(vault, policy.operation_type)
        current = vault.policy_slot(policy.operation_type)
        if current == policy_id:
            return  # already associated: nothing to do
        if current:
            raise errors.PolicySlotTakenError(
                f"the vault already has {policy.operation_type} policy {current}; dissociate it first")
        changes = {f"{policy.operation_type}_policy_id": policy_id}
        if policy.operation_type == "replication":
            changes["replication_destination_vault_id"] = destination_vault_id or None
        await uow.vaults.update_fields(vault.vault_id, **changes)
        await uow.publish(ev.VaultPolicyChanged(
            project_id=project_id, vault_id=vault.vault_id, policy_id=policy_id,
            operation_type=policy.operation_type, destination_vault_id=destination_vault_id), "associated")
        await uow.commit()


async def dissociate_policy(project_id: str, vault_id: str, policy_id: str, uow: VaultUnitOfWork) -> None:
    policy_id = rules.check_id(policy_id, "policy_id")
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        slot = next((t for t in ("backup", "replication") if vault.policy_slot(t) == policy_id), None)
        if slot is None:
            raise errors.PolicyNotAssociatedError(f"policy {policy_id} is not associated with this vault")
        changes = {f"{slot}_policy_id": None}
        if slot == "replication":
            changes["replication_destination_vault_id"] = None
        await uow.vaults.update_fields(vault.vault_id, **changes)
        await uow.publish(ev.VaultPolicyChanged(
            project_id=project_id, vault_id=vault.vault_id, policy_id=policy_id, operation_type=slot),
            "dissociated")
        await uow.commit()


async def set_bind_rules(project_id: str, vault_id: str, auto_bind: bool, bind_rules: Sequence[Tag],
                         uow: VaultUnitOfWork) -> Vault:
    rules.check_bind_rules(bind_rules)
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        await uow.vaults.replace_bind_rules(vault.vault_id, bind_rules)
        await uow.vaults.update_fields(vault.vault_id, auto_bind=auto_bind)
        vault = await _vault(uow, project_id, vault_id)
        await uow.commit()
    return vault


async def list_project_tags(project_id: str, uow: VaultUnitOfWork) -> dict[str, list[str]]:
    async with uow:
        return await uow.vaults.project_tags(project_id)


async def create_vault_tags(project_id: str, vault_id: str, tags: Sequence[Tag], uow: VaultUnitOfWork) -> list[Tag]:
    """Adds the tags, overwriting the values of keys the vault has already."""
    if not tags:
        raise errors.InvalidTagError("give at least one tag")
    rules.check_tags(tags)
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        merged = {t.key: t for t in vault.tags}
        merged.update({t.key: t for t in tags})
        result = rules.check_tags(sorted(merged.values(), key=lambda t: t.key))
        await uow.vaults.replace_tags(vault.vault_id, result)
        await uow.commit()
    return result


async def delete_vault_tags(project_id: str, vault_id: str, keys: Sequence[str], uow: VaultUnitOfWork) -> list[Tag]:
    if not keys:
        raise errors.InvalidTagError("give at least one tag key")
    async with uow:
        vault = await _writable_vault(uow, project_id, vault_id)
        missing = sorted(set(keys) - {t.key for t in vault.tags})
        if missing:
            raise errors.InvalidTagError(f"the vault has no tag {short(missing[0])}")
        result = [t for t in vault.tags if t.key not in set(keys)]
        await uow.vaults.replace_tags(vault.vault_id, result)
        await uow.commit()
    return result


# Shared checks


async def _vault(uow: VaultUnitOfWork, project_id: str, vault_id: str, for_update: bool = False) -> Vault:
    vault = await uow.vaults.get(project_id, rules.check_id(vault_id, "vault_id"), for_update=for_update)
    if vault is None:
        raise errors.VaultNotFoundError(f"vault {vault_id} not found")
    return vault


async def _writable_vault(uow: VaultUnitOfWork, project_id: str, vault_id: str) -> Vault:
    vault = await _vault(uow, project_id, vault_id, for_update=True)
    if vault.status in UNWRITABLE_STATUSES:
        raise errors.VaultStatusError(f"the vault is {vault.status}")
    return vault


async def _policy(uow: VaultUnitOfWork, project_id: str, policy_id: str, policies: PolicyDirectory | None = None):
    """The policy as the projection knows it; one created a moment ago (its event not yet here) is asked of the
    policy service and recorded, as its event would record it."""
    policy_id = rules.check_id(policy_id, "policy_id")
    policy = await uow.vaults.get_policy(project_id, policy_id)
    if policy is None and policies is not None:
        policy = await policies.get(project_id, policy_id)
        if policy is not None:
            await uow.vaults.upsert_policy(policy)
    if policy is None:
        raise errors.PolicyNotFoundError(f"policy {policy_id} not found")
    return policy


def _check_policy_fits(vault: Vault, operation_type: str) -> None:
    if operation_type == "backup" and vault.protect_type != "backup":
        raise errors.PolicyNotApplicableError("backup policies apply to backup vaults only")
    # Any backup type replicates, disks too (issue 12 lifts CBR's rule against them), but replicas never again:
    # a replication vault takes no replication policy.
    if operation_type == "replication" and vault.protect_type != "backup":
        raise errors.PolicyNotApplicableError("replication policies apply to backup vaults only")


def _require_held(vault: Vault, resource_ids: Sequence[str]) -> None:
    held = {r.resource_id for r in vault.resources}
    missing = [r for r in resource_ids if r not in held]
    if missing:
        raise errors.ResourceNotInVaultError(f"resource {missing[0]} is not in vault {vault.vault_id}")


async def _checked_new_resources(vault: Vault, specs: Sequence[ResourceSpec], uow: VaultUnitOfWork,
                                 directory: ProtectableDirectory) -> list[VaultResource]:
    """Every rule for adding resources to `vault`; asks the backup service only after the cheap checks."""
    if len(specs) > rules.MAX_RESOURCES:
        raise errors.TooManyResourcesError(f"a vault holds at most {rules.MAX_RESOURCES} resources")
    ids = rules.check_ids([s.resource_id for s in specs], "resource_id")
    for spec in specs:
        if spec.type != vault.object_type:
            raise errors.ResourceTypeMismatchError(
                f"a {vault.object_type} vault cannot hold {spec.type or 'untyped'} resource {spec.resource_id}")
        if spec.exclude_volumes and spec.type != "server":
            raise errors.InvalidExcludeVolumesError("exclude_volumes applies to server resources only")
        for volume in spec.exclude_volumes:
            rules.check_id(volume, "exclude_volumes entry")
        if len(spec.name) > 255:
            raise errors.InvalidExcludeVolumesError("resource name is longer than 255 characters")
    if len(vault.resources) + len(ids) > rules.MAX_RESOURCES:
        raise errors.TooManyResourcesError(f"a vault holds at most {rules.MAX_RESOURCES} resources")
    held = await uow.vaults.vaults_holding(vault.project_id, ids)
    if held:
        resource_id, holder = next(iter(held.items()))
        where = "this vault" if holder == vault.vault_id else "another vault"
        raise errors.ResourceInVaultError(f"resource {resource_id} is already in {where}")
    resources = []
    for spec, resource_id in zip(specs, ids):
        found = await directory.get(vault.project_id, spec.type, resource_id)
        if found is None:
            raise errors.ResourceNotFoundError(f"{spec.type} {resource_id} not found")
        stray = set(spec.exclude_volumes) - set(found.disk_ids)
        if stray:
            raise errors.InvalidExcludeVolumesError(f"disk {sorted(stray)[0]} is not a disk of server {resource_id}")
        resources.append(VaultResource(resource_id=resource_id, type=spec.type, name=spec.name or found.name,
                                       exclude_volumes=tuple(v.lower() for v in spec.exclude_volumes),
                                       size_bytes=found.size_bytes))
    return resources


async def _deleted_meanwhile(vault: Vault, resources: Sequence[VaultResource],
                             directory: ProtectableDirectory) -> list[str]:
    """Asked again once the add committed: a resource whose delete ran meanwhile is gone now. The backup
    service refuses to delete a resource a vault holds, asking this service while it holds the resource's row
    lock, and GetProtectable waits for that lock: so either that delete saw this add and was refused, or this
    read sees the resource gone."""
    return [r.resource_id for r in resources
            if await directory.get(vault.project_id, r.type, r.resource_id) is None]


async def _take_back(uow: VaultUnitOfWork, vault: Vault, ids: Sequence[str]) -> None:
    """Removes resources this call added (those still in the vault), as RemoveResources would."""
    async with uow:
        held = await uow.vaults.vaults_holding(vault.project_id, ids)
        ids = [r for r in ids if held.get(r) == vault.vault_id]
        if ids:
            await uow.vaults.remove_resources(vault.vault_id, ids)
            await _publish_resources(uow, "removed", vault, ids)
            await uow.commit()


async def _publish_resources(uow: VaultUnitOfWork, kind: str, vault: Vault, ids: list[str]) -> None:
    await uow.publish(ev.VaultResourcesChanged(project_id=vault.project_id, vault_id=vault.vault_id,
                                               resource_ids=ids), kind)


@contextlib.contextmanager
def _one_vault_per_resource():
    """A concurrent add of the same resource passes the checks, then loses on the primary key: same error."""
    try:
        yield
    except IntegrityError as exc:
        raise errors.ResourceInVaultError("the resource was added to a vault concurrently") from exc
