"""Vaults and the resources they protect, as plain dataclasses."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

OBJECT_TYPES = ("server", "disk", "turbo")
PROTECT_TYPES = ("backup", "replication")
CONSISTENT_LEVELS = ("crash_consistent", "app_consistent")
VAULT_STATUSES = ("available", "lock", "frozen", "deleting", "error")
PROTECT_STATUSES = ("available", "error", "protecting", "restoring", "removing")
POLICY_TYPES = ("backup", "replication")


@dataclass(frozen=True)
class Tag:
    key: str
    value: str


@dataclass
class VaultResource:
    resource_id: str
    type: str
    name: str = ""
    exclude_volumes: tuple[str, ...] = ()
    protect_status: str = "available"
    size_bytes: int = 0
    backup_size_bytes: int = 0
    backup_count: int = 0


@dataclass
class Vault:
    vault_id: str
    project_id: str
    name: str
    object_type: str
    protect_type: str
    size_gb: int
    description: str = ""
    consistent_level: str = "crash_consistent"
    used_bytes: int = 0
    used_measured_time: dt.datetime | None = None  # when the backup service measured used_bytes
    auto_expand: bool = False
    auto_bind: bool = False
    bind_rules: list[Tag] = field(default_factory=list)
    smn_notify: bool = True
    threshold: int = 80
    locked: bool = False
    encrypted: bool = True  # chosen at creation, never changed: the backup service keys the vault by it
    status: str = "available"
    resources: list[VaultResource] = field(default_factory=list)
    backup_policy_id: str = ""
    replication_policy_id: str = ""
    replication_destination_vault_id: str = ""
    tags: list[Tag] = field(default_factory=list)
    created_time: dt.datetime | None = None
    updated_time: dt.datetime | None = None

    def policy_slot(self, operation_type: str) -> str:
        return self.backup_policy_id if operation_type == "backup" else self.replication_policy_id


@dataclass(frozen=True)
class PolicyRef:
    """What the vault service knows of a policy, learned from the policy service's events."""
    policy_id: str
    project_id: str
    operation_type: str
    name: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class ProtectableInfo:
    """A resource as the backup service's inventory describes it."""
    resource_id: str
    type: str
    name: str
    size_bytes: int
    disk_ids: tuple[str, ...] = ()  # servers only
