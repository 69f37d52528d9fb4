"""The `backup` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Column, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, UniqueConstraint, text)
from sqlalchemy.dialects.postgresql import JSONB

from cbr_common.outbox import add_outbox_tables

metadata = MetaData(schema="backup")

# The local provider's inventory: the rows are the truth of what exists; the files follow them.
servers = Table(
    "servers", metadata,
    Column("server_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

disks = Table(
    "disks", metadata,
    Column("disk_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # available | in-use | error
    Column("server_id", String(36), ForeignKey("backup.servers.server_id"), index=True),
    Column("device", String(8)),  # vda, vdb, ... while attached
    Column("path", Text, nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("server_id", "device", name="uq_disks_server_device"),
)

file_systems = Table(
    "file_systems", metadata,
    Column("fs_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

# The operation log. Empty ids are NULL; extra_info holds CBR's per-type string map.
tasks = Table(
    "tasks", metadata,
    Column("task_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("operation_type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("bytes_total", BigInteger, nullable=False, default=0),
    Column("vault_id", String(36), index=True),
    Column("vault_name", String(64), nullable=False, default=""),
    Column("resource_id", String(36), index=True),
    Column("resource_name", String(255), nullable=False, default=""),
    Column("backup_id", String(36)),
    Column("checkpoint_id", String(36)),
    Column("policy_id", String(36)),
    Column("error_code", String(64), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("extra_info", JSONB, nullable=False, default=dict),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("started_time", DateTime(timezone=True)),
    Column("ended_time", DateTime(timezone=True)),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    # The job behind the task (migration backup_0003): what to do, and how the workers are getting on.
    Column("params", JSONB, nullable=False, default=dict),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker_id", String(64)),
    Column("heartbeat_time", DateTime(timezone=True)),
    Index("ix_tasks_project_created", "project_id", "created_time"),
    Index("ix_tasks_open", "operation_type", "created_time",  # migration backup_0011: the metrics' queue query
          postgresql_where=text("status IN ('waiting', 'running')")),
)

add_outbox_tables(metadata)

# The chunk index (migration backup_0002): one row per chunk a vault's store holds. The data path looks rows
# up and upserts them in batches (adapters/chunk_index.py); GC sweeps by last_referenced_time (DESIGN.md).

chunks = Table(
    "chunks", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("digest", LargeBinary, primary_key=True),  # the chunk id: keyed BLAKE3-256 of the plaintext
    Column("raw_size", Integer, nullable=False),
    Column("stored_size", Integer, nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("last_referenced_time", DateTime(timezone=True), nullable=False),
    # Migration backup_0007: where the value lives (DESIGN.md 13); NULL for a lone chunk object from before packs.
    Column("pack_id", LargeBinary, nullable=True),
    Column("pack_offset", BigInteger, nullable=True),
    # GC's sweep order. Deliberately not (vault_id, ...): a second index led by vault_id competes with the
    # primary key for lookups, and the planner picks it when a new vault's statistics are stale.
    Index("ix_chunks_last_referenced", "last_referenced_time"),
)

# Migration backup_0003: checkpoints, backups, the vaults' keys and the one-job-per-resource guard.

# Each vault's secret keys: the id key (keyed BLAKE3 chunk ids) and, for an encrypted vault, the data key, both
# wrapped by the key provider's KEK kek_id (migration backup_0006). id_key held them in the clear before; the
# service's start wraps such rows and empties it (cbr_backup.keys.lifecycle).
vault_keys = Table(
    "vault_keys", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("id_key", LargeBinary),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("kek_id", String(128)),
    Column("wrapped_id_key", LargeBinary),
    Column("wrapped_enc_key", LargeBinary),
    CheckConstraint("(id_key IS NULL) <> (wrapped_id_key IS NULL)", name="ck_vault_keys_clear_or_wrapped"),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("checkpoint_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("vault_id", String(36), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("incremental", Boolean, nullable=False),
    Column("auto_trigger", Boolean, nullable=False),
    Column("policy_id", String(36)),
    Column("skipped", JSONB, nullable=False, default=list),  # [{resource_id, type, name, code, reason}]
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64)),  # migration backup_0004: the caller's idempotency key
    Index("ix_checkpoints_project_created", "project_id", "created_time"),
    Index("uq_checkpoints_request", "project_id", "request_id", unique=True),
)

# One row per backup; a server backup has a child row per disk (parent_id). manifest_id is set when the
# backup becomes available: no reader ever sees a manifest that is not durable.
backups = Table(
    "backups", metadata,
    Column("backup_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("checkpoint_id", String(36), nullable=False, index=True),
    Column("vault_id", String(36), nullable=False, index=True),
    Column("parent_id", String(36), index=True),
    Column("resource_id", String(36), nullable=False, index=True),
    Column("resource_name", String(255), nullable=False, default=""),
    Column("resource_type", String(8), nullable=False),       # disk | server | turbo
    Column("resource_size_bytes", BigInteger, nullable=False, default=0),
    Column("device", String(8)),                               # children of a server backup: vda, vdb, ...
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("image_type", String(16), nullable=False, default="backup"),
    Column("incremental", Boolean, nullable=False, default=False),
    Column("auto_trigger", Boolean, nullable=False, default=False),
    Column("policy_id", String(36)),
    Column("logical_bytes", BigInteger, nullable=False, default=0),
    Column("stored_bytes", BigInteger, nullable=False, default=0),
    Column("added_bytes", BigInteger, nullable=False, default=0, server_default="0"),  # chunks it first stored
    Column("manifest_kind", String(8), nullable=False, default=""),  # disk | tree; "" for a server parent
    Column("manifest_id", String(80)),
    Column("base_backup_id", String(36)),                      # the backup this one read only changes against
    Column("task_id", String(36)),
    Column("corrupt", Boolean, nullable=False, default=False),
    Column("verified_time", DateTime(timezone=True)),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    Column("started_time", DateTime(timezone=True)),
    Column("protected_time", DateTime(timezone=True)),
    Column("expired_time", DateTime(timezone=True)),
    # Migration backup_0008: a replica's provenance (DESIGN.md 17.3); namespace_id NULL: the vault's own ids.
    Column("namespace_id", String(36)),
    Column("source_region", String(63)),
    Column("source_project_id", String(64)),
    Column("source_vault_id", String(36)),
    Column("source_backup_id", String(36)),
    Column("replication_record_id", String(36)),
    Column("source_manifest_digest", LargeBinary),
    Column("manifest_digest", LargeBinary),
    Index("ix_backups_project_created", "project_id", "created_time"),
)

# A resource (disk, server, file system) with a job running or waiting: at most one at a time. The row goes
# with the job's final status; a second backup or restore of the resource meanwhile is refused or skipped.
resource_jobs = Table(
    "resource_jobs", metadata,
    Column("resource_id", String(36), primary_key=True),
    Column("task_id", String(36), nullable=False),
    Column("operation_type", String(32), nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

# Migration backup_0008: replicas received from other regions (DESIGN.md 17.3-17.8).

# A source vault's id key, kept per (replication vault, source region, source vault): replicated chunks keep the
# source's ids, so the destination checks them with this key. Wrapped like a vault key (aad "...\0ns:<id>").
replica_namespaces = Table(
    "replica_namespaces", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("namespace_id", String(36), primary_key=True),
    Column("source_region", String(63), nullable=False),
    Column("source_vault_id", String(36), nullable=False),
    Column("kek_id", String(128), nullable=False),
    Column("wrapped_id_key", LargeBinary, nullable=False),
    Column("key_check", LargeBinary, nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("vault_id", "source_region", "source_vault_id", name="uq_replica_namespaces_source"),
)

# One transfer per (source region, replication record): a second begin resumes it.
replica_transfers = Table(
    "replica_transfers", metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("source_region", String(63), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("source_project_id", String(64), nullable=False),
    Column("source_vault_id", String(36), nullable=False),
    Column("source_backup_id", String(36), nullable=False),
    Column("source_backup", JSONB, nullable=False),   # the SourceBackup message, as JSON
    Column("project_id", String(64), nullable=False),  # the destination's
    Column("vault_id", String(36), nullable=False, index=True),
    Column("namespace_id", String(36), nullable=False),
    Column("key_check", LargeBinary, nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("retention", JSONB),
    Column("state", String(16), nullable=False),      # open | committed | aborted
    Column("wanted_ready", Boolean, nullable=False, default=False),
    Column("backup_id", String(36)),                  # the replica, once committed
    Column("chunks_received", BigInteger, nullable=False, default=0),
    Column("stored_bytes", BigInteger, nullable=False, default=0),
    Column("present_chunks", BigInteger, nullable=False, default=0),
    Column("present_bytes", BigInteger, nullable=False, default=0),
    Column("rejected_chunks", BigInteger, nullable=False, default=0),
    Column("started_time", DateTime(timezone=True), nullable=False),
    Column("last_activity_time", DateTime(timezone=True), nullable=False),
    Column("ended_time", DateTime(timezone=True)),
    UniqueConstraint("source_region", "record_id", name="uq_replica_transfers_record"),
)

# Manifests staged under <vault>/staging/<transfer_id>/<source_backup_id>, rebuilt and checked.
replica_transfer_manifests = Table(
    "replica_transfer_manifests", metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("source_backup_id", String(36), primary_key=True),
    Column("kind", String(8), nullable=False),         # disk | tree | server
    Column("parent_replica_backup_id", String(36)),
    Column("digest", LargeBinary, nullable=False),     # the manifest's own trailing BLAKE3 (empty for a server)
    Column("size_bytes", BigInteger, nullable=False),
)

# The chunks the staged manifests name that the index lacked; rows go as their chunks are indexed.
replica_transfer_wanted = Table(
    "replica_transfer_wanted", metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("digest", LargeBinary, primary_key=True),
    Column("raw_size", Integer, nullable=False),
)

# Packs a transfer put, recorded before their put (for adoption after a crash, DESIGN.md 17.8).
replica_transfer_packs = Table(
    "replica_transfer_packs", metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("pack_id", LargeBinary, primary_key=True),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

# Dictionaries of a namespace (stored under <vault>/ns/<namespace_id>/dicts/<id hex>), never collected.
replica_dictionaries = Table(
    "replica_dictionaries", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("namespace_id", String(36), primary_key=True),
    Column("dictionary_id", LargeBinary, primary_key=True),
    Column("created_time", DateTime(timezone=True), nullable=False),
)

# Migration backup_0009: the source side of a replication (DESIGN.md 17.2): one row per replication task, made
# with it from cbr.replication.requested. It names where the replica goes and keeps the transfer the attempts
# resume and the record's exact counters (17.9), so a retried attempt starts from them.
replication_jobs = Table(
    "replication_jobs", metadata,
    Column("task_id", String(36), primary_key=True),
    Column("record_id", String(36), nullable=False, unique=True),  # the replication service's record
    Column("project_id", String(64), nullable=False),
    Column("source_vault_id", String(36), nullable=False),
    Column("source_backup_id", String(36), nullable=False, index=True),
    Column("destination_region", String(63), nullable=False),
    Column("destination_project_id", String(64), nullable=False),
    Column("destination_vault_id", String(36), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("auto_trigger", Boolean, nullable=False, default=False),
    Column("policy_id", String(36)),
    Column("retention", LargeBinary),            # ReplicaRetention, serialized; auto replicas only
    Column("transfer_id", String(64)),           # the destination's transfer, once begun
    Column("chunk_bytes_sent", BigInteger, nullable=False, default=0),
    Column("present_bytes", BigInteger, nullable=False, default=0),
    Column("resent_bytes", BigInteger, nullable=False, default=0),
    Column("metadata_bytes", BigInteger, nullable=False, default=0),
    Column("chunks_sent", BigInteger, nullable=False, default=0),
    Column("chunks_present", BigInteger, nullable=False, default=0),
    Column("present_known", Boolean, nullable=False, default=False),  # counted from the first want-list only
    # The last send position handed to the destination (domain.replication_source.send_order: pack, offset): on a
    # resume, a wanted chunk at or before it was sent before, so sending it again counts as re-sent.
    Column("sent_through", LargeBinary),
    Column("destination_backup_id", String(36)),
    Column("source_manifest_digest", LargeBinary),
    Column("replica_manifest_digest", LargeBinary),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    # Migration backup_0010 (DESIGN 17.11): the record's own pace, and whether the job holds one of its
    # destination's slots (counted only while its task is running with a live lease).
    Column("rate_limit_mbps", Float, nullable=False, default=0.0),
    Column("slot_held", Boolean, nullable=False, default=False),
    Index("ix_replication_jobs_slots", "destination_region", postgresql_where=text("slot_held")),
)
