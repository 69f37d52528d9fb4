"""Replication records, what the source's backup service says of a backup, and its task's updates, as plain
dataclasses (services/backup/DESIGN.md 17.2, 17.9)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

STATUSES = ("waiting", "replicating", "success", "failed", "cancelled", "skipped")
OPEN_STATUSES = ("waiting", "replicating")      # at most one such record per (backup, destination vault)
FINAL_STATUSES = ("success", "failed", "cancelled", "skipped")  # never left again
TASK_STATES = ("created", "started", "progress", "retrying", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class Counters:
    """Exact counts of one replication (DESIGN 17.9)."""
    chunk_bytes_sent: int = 0
    present_bytes: int = 0
    resent_bytes: int = 0
    metadata_bytes: int = 0
    chunks_sent: int = 0
    chunks_present: int = 0


@dataclass(frozen=True)
class Destination:
    region: str
    project_id: str
    vault_id: str


@dataclass(frozen=True)
class ReplicationRecord:
    replication_record_id: str
    project_id: str
    source_region: str
    source_vault_id: str
    source_backup_id: str
    destination: Destination
    status: str
    created_time: dt.datetime
    updated_time: dt.datetime
    resource_type: str = ""          # disk | server | turbo
    resource_id: str = ""
    name: str = ""
    description: str = ""
    request_id: str = ""
    auto_trigger: bool = False
    policy_id: str = ""
    retention: bytes = b""           # the policy's rule (a serialized ReplicaRetention) for auto replicas
    task_id: str = ""
    attempt: int = 0
    progress: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    counters: Counters = Counters()
    destination_backup_id: str = ""
    source_manifest_digest: bytes = b""
    replica_manifest_digest: bytes = b""
    error_code: str = ""
    error_message: str = ""
    started_time: dt.datetime | None = None
    ended_time: dt.datetime | None = None
    checkpoint_request_id: str = ""  # the ReplicateCheckpoint request that made it, if one did
    rate_limit_mbps: float = 0.0     # this replication's pace in MB/s; 0: none (DESIGN 17.11)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def transferred_bytes(self) -> int:
        return self.counters.chunk_bytes_sent + self.counters.resent_bytes


@dataclass(frozen=True)
class SourceBackup:
    """A backup of this region as its backup service describes it."""
    backup_id: str
    project_id: str
    vault_id: str
    name: str
    description: str
    status: str          # available | protecting | ... (cbr.backup.v1.BackupStatus names)
    image_type: str      # backup | replication
    corrupt: bool
    parent_id: str       # set on one disk of a server backup
    resource_id: str
    resource_type: str   # disk | server | turbo
    resource_size_bytes: int = 0
    created_time: dt.datetime | None = None


@dataclass(frozen=True)
class TaskUpdate:
    """The backup service's word on a record's task (cbr.backup.replication_<state>)."""
    project_id: str
    replication_record_id: str
    state: str
    task_id: str = ""
    attempt: int = 0
    progress: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    counters: Counters | None = None
    destination_backup_id: str = ""
    source_manifest_digest: bytes = b""
    replica_manifest_digest: bytes = b""
    error_code: str = ""
    error_message: str = ""
