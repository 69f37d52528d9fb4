"""Requests to the vault service, as plain dataclasses (already converted from protobuf, not yet checked)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cbr_vault.domain.model import Tag


@dataclass(frozen=True)
class ResourceSpec:
    resource_id: str
    type: str
    name: str = ""
    exclude_volumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateVault:
    project_id: str
    name: str
    object_type: str
    protect_type: str
    size_gb: int
    description: str = ""
    consistent_level: str = "crash_consistent"
    auto_expand: bool = False
    auto_bind: bool = False
    bind_rules: tuple[Tag, ...] = ()
    smn_notify: bool = True
    threshold: int = 80
    locked: bool = False
    encrypted: bool = True
    resources: tuple[ResourceSpec, ...] = ()
    backup_policy_id: str = ""
    tags: tuple[Tag, ...] = ()


@dataclass(frozen=True)
class UpdateVault:
    """None means: leave unchanged."""
    project_id: str
    vault_id: str
    name: str | None = None
    description: str | None = None
    size_gb: int | None = None
    auto_expand: bool | None = None
    auto_bind: bool | None = None
    smn_notify: bool | None = None
    threshold: int | None = None
    locked: bool | None = None


@dataclass(frozen=True)
class ListVaults:
    project_id: str
    limit: int = 0
    offset: int = 0
    name: str = ""
    object_type: str = ""
    protect_type: str = ""
    status: str = ""
    policy_id: str = ""
    resource_ids: tuple[str, ...] = ()
    vault_ids: tuple[str, ...] = field(default_factory=tuple)
