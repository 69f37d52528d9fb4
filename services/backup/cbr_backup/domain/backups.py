"""Checkpoints and backups as plain dataclasses, and the pure rules their requests must satisfy."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from cbr_backup.domain import errors
from cbr_common.echo import short

BACKUP_STATUSES = ("available", "protecting", "deleting", "restoring", "error", "waiting_protect",
                   "waiting_delete", "waiting_restore")
IMAGE_TYPES = ("backup", "replication")
SORT_KEYS = ("created_time", "updated_time", "name", "status", "protected_time", "backup_id")
MAX_CHECKPOINT_RESOURCES = 256
MAX_DESCRIPTION = 255
# Backup names follow CBR: 1-64 characters, anything printable but these.
BACKUP_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f!<>=&\"'/\\]")
MAX_TARGET_PATH = 4096
GIB = 1 << 30


@dataclass(frozen=True)
class SkippedResource:
    resource_id: str
    type: str
    name: str
    code: str
    reason: str


@dataclass
class Checkpoint:
    checkpoint_id: str
    project_id: str
    vault_id: str
    name: str
    description: str = ""
    incremental: bool = True
    auto_trigger: bool = False
    policy_id: str = ""
    skipped: list[SkippedResource] = field(default_factory=list)
    created_time: dt.datetime | None = None
    request_id: str = ""
    backups: list["Backup"] = field(default_factory=list)  # top-level backups it made, when loaded


@dataclass
class Backup:
    backup_id: str
    project_id: str
    checkpoint_id: str
    vault_id: str
    resource_id: str
    resource_type: str          # disk | server | turbo
    name: str
    status: str
    resource_name: str = ""
    resource_size_bytes: int = 0
    parent_id: str = ""         # per-disk backups of a server backup
    device: str = ""
    description: str = ""
    image_type: str = "backup"
    incremental: bool = False
    auto_trigger: bool = False
    policy_id: str = ""
    logical_bytes: int = 0
    stored_bytes: int = 0       # compressed size of every chunk it references
    added_bytes: int = 0        # compressed size of the chunks it was the first in its vault to store
    manifest_kind: str = ""     # disk | tree; "" for a server backup (its children hold the data)
    manifest_id: str = ""
    base_backup_id: str = ""
    task_id: str = ""
    corrupt: bool = False
    verified_time: dt.datetime | None = None
    created_time: dt.datetime | None = None
    updated_time: dt.datetime | None = None
    started_time: dt.datetime | None = None
    protected_time: dt.datetime | None = None
    expired_time: dt.datetime | None = None
    # A replica's provenance (DESIGN.md 17.3): namespace_id names the source vault's id key its chunks use.
    namespace_id: str = ""
    source_region: str = ""
    source_project_id: str = ""
    source_vault_id: str = ""
    source_backup_id: str = ""
    replication_record_id: str = ""
    source_manifest_digest: bytes | None = None
    manifest_digest: bytes | None = None
    children: list["Backup"] = field(default_factory=list)


@dataclass(frozen=True)
class BackupFilter:
    project_id: str
    vault_id: str = ""
    resource_id: str = ""
    resource_type: str = ""
    statuses: tuple[str, ...] = ()
    image_type: str = ""
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    name: str = ""
    checkpoint_id: str = ""
    parent_id: str = ""
    top_level: bool = True  # per-disk children only when asked for by parent_id
    sort: tuple[tuple[str, bool], ...] = (("created_time", True),)  # (key, descending)


REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{0,64}")


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID_RE.fullmatch(request_id):
        raise errors.InvalidRequestIdError("request_id must be 0-64 letters, digits, '_' or '-'")
    return request_id


def check_backup_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or BACKUP_NAME_FORBIDDEN.search(name):
        raise errors.InvalidNameError("name must be 1-64 characters without control characters or !<>=&\"'/\\")
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION or BACKUP_NAME_FORBIDDEN.search(description.replace("/", "")):
        raise errors.InvalidDescriptionError(
            "description must be at most 255 characters without control characters or !<>=&\"'\\")
    return description


def default_backup_name(auto_trigger: bool, now: dt.datetime) -> str:
    """CBR's manualbk_xxxx / autobk_xxxx: a prefix and a 4-character time stamp suffix."""
    return f"{'autobk' if auto_trigger else 'manualbk'}_{now.strftime('%H%M%S%f')[:4]}"


def parse_sort(spec: str) -> tuple[tuple[str, bool], ...]:
    """"<key>[:asc|desc]" comma-separated -> ((key, descending), ...); default newest first."""
    if not spec.strip():
        return (("created_time", True),)
    keys = []
    for part in spec.split(","):
        key, _, order = part.strip().partition(":")
        if key not in SORT_KEYS or order not in ("", "asc", "desc") or key in (k for k, _ in keys):
            raise errors.InvalidSortError(
                f"sort must be '<key>[:asc|desc]' comma-separated, keys from {', '.join(SORT_KEYS)}; got {short(spec)}")
        keys.append((key, order != "asc"))
    return tuple(keys)


def check_statuses(statuses) -> tuple[str, ...]:
    """The distinct statuses asked for (a filter repeating one 70,000 times is still one filter)."""
    for status in statuses:
        if status not in BACKUP_STATUSES:
            raise errors.InvalidStatusError(f"status must be among {', '.join(BACKUP_STATUSES)}")
    return tuple(dict.fromkeys(statuses))


def check_target_path(path: str) -> PurePosixPath:
    """A file-system restore path: relative, no '..', '.', empty parts or NUL; '' is the root."""
    if not path:
        return PurePosixPath()
    parts = path.split("/")
    if (len(path) > MAX_TARGET_PATH or path.startswith("/") or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise errors.InvalidTargetPathError(
            "target_path must be relative to the file system root, without '..', '.', empty parts or NUL")
    return PurePosixPath(*parts)


def check_grace_seconds(grace: int | None) -> int:
    if grace is None:
        return 86400
    if not 0 <= grace <= 365 * 86400:
        raise errors.InvalidGraceError("grace_seconds must be 0..31536000 (a year)")
    return grace


def capacity_bytes(size_gb: int) -> int:
    return size_gb * GIB


def check_room(used_bytes: int, size_gb: int, auto_expand: bool, full_bytes: int = 0) -> None:
    """Before a backup (at CreateCheckpoint, and again at job start before anything is read), for a vault that
    may not grow (the vault service grows an auto-expanding one, 1.25x at a time):
    - a vault at or over its capacity takes no backup;
    - a full backup (no earlier backup of the resource in the vault to compare with) needs free capacity for
      the resource's size, `full_bytes`: what it stores is known only after reading everything, and a backup
      refused at its end would have read and stored it all for nothing;
    - an incremental needs only some room: it may add little, and check_fits judges what it did add."""
    capacity = capacity_bytes(size_gb)
    if auto_expand:
        return
    if used_bytes >= capacity:
        raise errors.VaultFullError(
            f"the vault is full ({used_bytes} of {capacity} bytes used) and auto_expand is off")
    if used_bytes + full_bytes > capacity:
        raise errors.VaultFullError(
            f"a full backup needs room for the resource's {full_bytes} bytes; the vault has {capacity - used_bytes} "
            f"of {capacity} bytes free and auto_expand is off")


@dataclass
class Room:
    """A vault's capacity as one checkpoint uses it up: each full backup it starts takes its resource's size,
    so two resources that fit alone but not together are not both started."""
    used_bytes: int
    size_gb: int
    auto_expand: bool
    taken_bytes: int = 0

    def check(self, full_bytes: int) -> None:
        check_room(self.used_bytes + self.taken_bytes, self.size_gb, self.auto_expand, full_bytes=full_bytes)

    def take(self, full_bytes: int) -> None:
        self.taken_bytes += full_bytes


def check_fits(used_bytes: int, size_gb: int, auto_expand: bool) -> None:
    """After a backup's chunks are stored: it fails if they took the vault past its size (a vault exactly full
    holds its last backup)."""
    if not auto_expand and used_bytes > capacity_bytes(size_gb):
        raise errors.VaultFullError(
            f"the backup took the vault past its size ({used_bytes} of {capacity_bytes(size_gb)} bytes) and "
            f"auto_expand is off")


def check_deletable(backup: Backup, vault_locked: bool, now: dt.datetime) -> Backup:
    if backup.parent_id:
        raise errors.ChildBackupError(
            f"backup {backup.backup_id} belongs to server backup {backup.parent_id}; delete that one")
    busy = [b for b in (backup, *backup.children) if b.status not in ("available", "error")]
    if busy:
        raise errors.BackupStateError(f"backup {busy[0].backup_id} is {busy[0].status}; it cannot be deleted now")
    if vault_locked and backup.auto_trigger and (backup.expired_time is None or backup.expired_time > now):
        raise errors.BackupLockedError(
            f"backup {backup.backup_id} is an automatic backup of a locked vault and has not expired")
    return backup


def check_restorable(backup: Backup) -> Backup:
    if backup.status != "available":
        raise errors.BackupStateError(f"backup {backup.backup_id} is {backup.status}; only available backups restore")
    if backup.corrupt or any(c.corrupt for c in backup.children):
        raise errors.BackupCorruptError(
            f"backup {backup.backup_id} needs chunks that verify found missing or damaged; it cannot be restored")
    return backup
