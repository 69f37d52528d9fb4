"""Protobuf messages <-> vault domain objects and commands."""
from __future__ import annotations

from cbr.common.v1 import common_pb2
from cbr.vault.v1 import vault_pb2
from cbr_common.proto_enums import enum_name, enum_value
from cbr_vault.domain.model import Tag, Vault
from cbr_vault.service.commands import CreateVault, ListVaults, ResourceSpec, UpdateVault


def object_type(value: int) -> str:
    return enum_name(common_pb2.ObjectType, value)


def tags_in(tags) -> tuple[Tag, ...]:
    return tuple(Tag(t.key, t.value) for t in tags)


def tags_out(tags) -> list[common_pb2.Tag]:
    return [common_pb2.Tag(key=t.key, value=t.value) for t in tags]


def resources_in(refs) -> tuple[ResourceSpec, ...]:
    return tuple(ResourceSpec(resource_id=r.resource_id, type=object_type(r.type), name=r.name,
                              exclude_volumes=tuple(r.exclude_volumes)) for r in refs)


def create_vault_in(project_id: str, req: vault_pb2.CreateVaultRequest) -> CreateVault:
    return CreateVault(
        project_id=project_id, name=req.name, description=req.description, object_type=object_type(req.object_type),
        protect_type=enum_name(vault_pb2.ProtectType, req.protect_type),
        consistent_level=enum_name(vault_pb2.ConsistentLevel, req.consistent_level, "crash_consistent"),
        size_gb=req.size_gb, auto_expand=req.auto_expand, auto_bind=req.auto_bind,
        bind_rules=tags_in(req.bind_rules), smn_notify=req.smn_notify if req.HasField("smn_notify") else True,
        threshold=req.threshold if req.HasField("threshold") else 80, locked=req.locked,
        encrypted=req.encrypted if req.HasField("encrypted") else True,
        resources=resources_in(req.resources), backup_policy_id=req.backup_policy_id, tags=tags_in(req.tags))


def update_vault_in(project_id: str, req: vault_pb2.UpdateVaultRequest) -> UpdateVault:
    fields = ("name", "description", "size_gb", "auto_expand", "auto_bind", "smn_notify", "threshold", "locked")
    return UpdateVault(project_id=project_id, vault_id=req.vault_id,
                       **{f: getattr(req, f) for f in fields if req.HasField(f)})


def list_vaults_in(project_id: str, req: vault_pb2.ListVaultsRequest) -> ListVaults:
    return ListVaults(
        project_id=project_id, limit=req.page.limit, offset=req.page.offset, name=req.name,
        object_type=object_type(req.object_type), protect_type=enum_name(vault_pb2.ProtectType, req.protect_type),
        status=enum_name(vault_pb2.VaultStatus, req.status), policy_id=req.policy_id,
        resource_ids=tuple(req.resource_ids), vault_ids=tuple(req.vault_ids))


def vault_out(vault: Vault) -> vault_pb2.Vault:
    msg = vault_pb2.Vault(
        vault_id=vault.vault_id, project_id=vault.project_id, name=vault.name, description=vault.description,
        object_type=enum_value(common_pb2.ObjectType, vault.object_type),
        protect_type=enum_value(vault_pb2.ProtectType, vault.protect_type),
        consistent_level=enum_value(vault_pb2.ConsistentLevel, vault.consistent_level),
        size_gb=vault.size_gb, used_bytes=vault.used_bytes, auto_expand=vault.auto_expand,
        auto_bind=vault.auto_bind, bind_rules=tags_out(vault.bind_rules), smn_notify=vault.smn_notify,
        threshold=vault.threshold, locked=vault.locked, encrypted=vault.encrypted, status=enum_value(vault_pb2.VaultStatus, vault.status),
        backup_policy_id=vault.backup_policy_id, replication_policy_id=vault.replication_policy_id,
        tags=tags_out(vault.tags),
        resources=[vault_pb2.VaultResource(
            resource_id=r.resource_id, type=enum_value(common_pb2.ObjectType, r.type), name=r.name,
            exclude_volumes=list(r.exclude_volumes),
            protect_status=enum_value(vault_pb2.ProtectStatus, r.protect_status), size_bytes=r.size_bytes,
            backup_size_bytes=r.backup_size_bytes, backup_count=r.backup_count) for r in vault.resources])
    if vault.created_time:
        msg.created_time.FromDatetime(vault.created_time)
    if vault.updated_time:
        msg.updated_time.FromDatetime(vault.updated_time)
    return msg
