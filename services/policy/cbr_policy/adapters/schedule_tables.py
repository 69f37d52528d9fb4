"""The scheduler's tables in the `policy` schema (migration policy_0003): when each (policy, vault) fires next,
every fire time recorded, and vaults waiting for retention."""
from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text, UniqueConstraint

from cbr_policy.adapters.tables import metadata

# One row per vault bound to an enabled policy: the earliest fire time not yet recorded as a tick.
schedules = Table(
    "schedules", metadata,
    Column("policy_id", String(36), primary_key=True),
    Column("vault_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("next_fire_time", DateTime(timezone=True), nullable=False),
    Column("policy_version", DateTime(timezone=True), nullable=False),  # the policy's updated_time it follows
    Column("last_checkpoint_id", String(36)),  # the last fired tick's: is the previous run still going?
    Column("fired_count", Integer, nullable=False, default=0),  # for full_backup_interval
    Index("ix_schedules_next_fire", "next_fire_time"),
)

# Every fire time, recorded before the work is asked for; the unique key is what keeps two schedulers (or a
# restarted one) from running a tick twice.
ticks = Table(
    "ticks", metadata,
    Column("tick_id", String(36), primary_key=True),
    Column("policy_id", String(36), nullable=False),
    Column("vault_id", String(36), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("operation_type", String(16), nullable=False),
    Column("scheduled_time", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # firing | fired | skipped | failed
    Column("reason", Text, nullable=False, default=""),
    Column("checkpoint_id", String(36)),
    Column("fired_time", DateTime(timezone=True)),
    Column("claimed_time", DateTime(timezone=True)),  # by the database's clock: a stale firing tick is retried
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("policy_id", "vault_id", "scheduled_time", name="uq_ticks_policy_vault_time"),
    Index("ix_ticks_project_scheduled", "project_id", "scheduled_time"),
    Index("ix_ticks_status_claimed", "status", "claimed_time"),
)

# Vaults whose retention should run (after an automatic backup completed, and daily for every bound vault).
retention_due = Table(
    "retention_due", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("due_time", DateTime(timezone=True), nullable=False),
)

# Retention rules that travelled with auto replicas into this region (services/backup/DESIGN.md 17): one per
# (replication vault, source replication policy), the latest replica's rule; applied to that policy's replicas.
replica_rules = Table(
    "replica_rules", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("policy_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("max_backups", Integer, nullable=False),
    Column("retention_duration_days", Integer, nullable=False),
    Column("day_backups", Integer, nullable=False),
    Column("week_backups", Integer, nullable=False),
    Column("month_backups", Integer, nullable=False),
    Column("year_backups", Integer, nullable=False),
    Column("timezone", String(16), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
)
