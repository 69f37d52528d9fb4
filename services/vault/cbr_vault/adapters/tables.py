"""The `vault` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from __future__ import annotations

from sqlalchemy import (ARRAY, BigInteger, Boolean, Column, DateTime, ForeignKey, Identity, Index, Integer, MetaData,
                        String, Table, Text)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY, JSONB

from cbr_common.outbox import add_outbox_tables

metadata = MetaData(schema="vault")

vaults = Table(
    "vaults", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("object_type", String(16), nullable=False),
    Column("protect_type", String(16), nullable=False),
    Column("consistent_level", String(32), nullable=False),
    Column("size_gb", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False, default=0),
    # When the backup service measured used_bytes: a measurement older than this arrived late and is dropped.
    Column("used_measured_time", DateTime(timezone=True)),
    Column("auto_expand", Boolean, nullable=False, default=False),
    Column("auto_bind", Boolean, nullable=False, default=False),
    Column("smn_notify", Boolean, nullable=False, default=True),
    Column("threshold", Integer, nullable=False, default=80),
    Column("locked", Boolean, nullable=False, default=False),
    Column("encrypted", Boolean, nullable=False, default=True),  # vault_0003: vaults from before say false
    Column("status", String(16), nullable=False),
    Column("backup_policy_id", String(36)),
    Column("replication_policy_id", String(36)),
    Column("replication_destination_vault_id", String(36)),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
)

# resource_id is the primary key: a resource lives in at most one vault, enforced by the database too.
vault_resources = Table(
    "vault_resources", metadata,
    Column("resource_id", String(36), primary_key=True),
    Column("vault_id", String(36), ForeignKey("vault.vaults.vault_id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("project_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("exclude_volumes", ARRAY(String(36)), nullable=False, default=list),
    Column("protect_status", String(16), nullable=False, default="available"),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("backup_size_bytes", BigInteger, nullable=False, default=0),
    Column("backup_count", Integer, nullable=False, default=0),
    Column("added_time", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, Identity(), nullable=False),  # keeps the order resources were added in
)

vault_tags = Table(
    "vault_tags", metadata,
    Column("vault_id", String(36), ForeignKey("vault.vaults.vault_id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(36), primary_key=True),
    Column("value", String(43), nullable=False, default=""),
)

bind_rules = Table(
    "bind_rules", metadata,
    Column("vault_id", String(36), ForeignKey("vault.vaults.vault_id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(36), primary_key=True),
    Column("value", String(43), primary_key=True),
)

# What the vault service knows of policies, projected from the policy service's events.
policies = Table(
    "policies", metadata,
    Column("policy_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("operation_type", String(16), nullable=False),
    Column("name", String(64), nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("updated_time", DateTime(timezone=True), nullable=False),
)

# The audit trail of every service of the region (cbr.audit.recorded events; cbr_vault/service/audit.py). Text
# columns throughout: a record carries what callers sent, and a record the table cannot hold would never leave the
# event stream.
audit_events = Table(
    "audit_events", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("time", DateTime(timezone=True), nullable=False),   # when the call arrived
    Column("project_id", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("roles", ARRAY(Text), nullable=False),
    Column("service", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("ids", JSONB, nullable=False),                      # [[field, id], ...]
    Column("id_values", PG_ARRAY(Text), nullable=False),       # the ids alone, for the resource filter (@>)
    Column("request_id", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("cbr_code", Text, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("peer", Text, nullable=False),
    Column("recorded_time", DateTime(timezone=True), nullable=False),
    Index("audit_events_project_time", "project_id", "time"),
    Index("audit_events_time", "time"),
    Index("audit_events_id_values", "id_values", postgresql_using="gin"),
)

add_outbox_tables(metadata)
