"""Replicas received from another region (DESIGN.md 17.3-17.7): what a source backup must be to become one, the
manifests it is made of, and the checks on a replication vault. Pure: no grpc, SQLAlchemy or store."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field, fields

from cbr_backup.domain import errors
from cbr_backup.domain.backups import check_room

KINDS = {"disk": "disk", "turbo": "tree", "server": "server"}  # resource type -> the manifest kind it crosses as
MAX_LIMIT = 16384
ID_SIZE = 32
_RECORD_ID = re.compile(r"[A-Za-z0-9_.-]{1,36}")


@dataclass(frozen=True)
class SourceBackup:
    """What the destination knows of the source backup (the contract's SourceBackup)."""
    backup_id: str
    project_id: str
    vault_id: str
    resource_id: str
    resource_type: str          # disk | server | turbo
    checkpoint_id: str = ""
    name: str = ""
    description: str = ""
    resource_name: str = ""
    resource_size_bytes: int = 0
    incremental: bool = False
    auto_trigger: bool = False
    logical_bytes: int = 0
    stored_bytes: int = 0
    device: str = ""
    created_time: dt.datetime | None = None
    protected_time: dt.datetime | None = None
    children: tuple["SourceBackup", ...] = field(default_factory=tuple)

    def parts(self) -> dict[str, str]:
        """source backup id -> the kind of manifest it crosses as: a server's own record and its disks'."""
        if self.resource_type == "server":
            return {self.backup_id: "server", **{c.backup_id: "disk" for c in self.children}}
        return {self.backup_id: KINDS[self.resource_type]}

    def part(self, backup_id: str) -> "SourceBackup":
        return next(b for b in (self, *self.children) if b.backup_id == backup_id)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "children":
                value = [c.to_json() for c in value]
            elif isinstance(value, dt.datetime):
                value = value.isoformat()
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SourceBackup":
        values = dict(data)
        values["children"] = tuple(cls.from_json(c) for c in values.get("children", ()))
        for name in ("created_time", "protected_time"):
            if values.get(name):
                values[name] = dt.datetime.fromisoformat(values[name])
        return cls(**values)


def check_id(value: str, what: str) -> str:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise errors.InvalidTransferRequestError(f"{what} must be a UUID") from None
    return value


def check_source(source: SourceBackup, source_vault_id: str) -> SourceBackup:
    """A source backup that can become a replica: known ids, a known type, a server with its disks."""
    if source.resource_type not in KINDS:
        raise errors.InvalidTransferRequestError("source_backup.resource_type must be disk, server or turbo")
    check_id(source.backup_id, "source_backup.backup_id")
    if not source.resource_id or len(source.resource_id) > 36:
        raise errors.InvalidTransferRequestError("source_backup.resource_id must be 1-36 characters")
    if source.vault_id and source.vault_id != source_vault_id:
        raise errors.InvalidTransferRequestError("source_backup.vault_id is not source_vault_id")
    if (source.resource_type == "server") != bool(source.children):
        raise errors.InvalidTransferRequestError("a server backup, and only a server backup, has disk children")
    ids = {source.backup_id}
    for child in source.children:
        check_id(child.backup_id, "source_backup.children.backup_id")
        if child.resource_type != "disk" or child.children or child.backup_id in ids:
            raise errors.InvalidTransferRequestError("a server backup's children are distinct disk backups")
        ids.add(child.backup_id)
    return source


def check_record_id(record_id: str) -> str:
    if not _RECORD_ID.fullmatch(record_id or ""):
        raise errors.InvalidTransferRequestError("replication_record_id must be 1-36 letters, digits, '.', '_', '-'")
    return record_id


def check_replica_vault(protect_type: str, object_type: str, resource_type: str) -> None:
    if protect_type != "replication":
        raise errors.ReplicaVaultTypeError("the destination vault is not a replication vault")
    if object_type != resource_type:
        raise errors.ReplicaVaultTypeError(
            f"the destination vault holds {object_type} backups, the source backup is of a {resource_type}")


def check_replica_room(used_bytes: int, size_gb: int, auto_expand: bool, full_bytes: int) -> None:
    """Room for a replica as for a full backup of the resource (section 6: what it stores is known only later)."""
    try:
        check_room(used_bytes, size_gb, auto_expand, full_bytes=full_bytes)
    except errors.VaultFullError as exc:
        raise errors.ReplicaVaultFullError(exc.message) from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.InvalidTransferRequestError(f"limit must be 1..{MAX_LIMIT}")
    return limit


@dataclass
class ManifestParts:
    """A manifest arriving in parts: each starts where the last one ended, so gaps and repeats are caught."""
    kind: str
    parent_replica_backup_id: str
    data: bytearray = field(default_factory=bytearray)
    complete: bool = False

    def add(self, kind: str, parent: str, offset: int, data: bytes, last: bool, limit: int) -> None:
        if self.complete:
            raise errors.InvalidManifestError("a part after the manifest's last")
        if kind != self.kind or parent != self.parent_replica_backup_id:
            raise errors.InvalidManifestError("the parts of one manifest name different kinds or parents")
        if offset != len(self.data):
            raise errors.InvalidManifestError(f"a part at offset {offset} where {len(self.data)} was expected")
        if len(self.data) + len(data) > limit:
            raise errors.InvalidManifestError(f"manifest larger than {limit} bytes")
        self.data += data
        self.complete = last
