"""The `policy` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, MetaData, String, Table
from sqlalchemy.dialects.postgresql import JSONB

from cbr_common.outbox import add_outbox_tables

metadata = MetaData(schema="policy")

# trigger: {"patterns": [str, ...], "start_time": ISO 8601 UTC}; start_time is always stored (the creation
# time when the caller left it unset), so the schedule's INTERVAL counts from a date that never moves.
# operation_definition: OperationDefinition's fields by name (domain/model.py), -1 for "unset" counts.
policies = Table(
    "policies", metadata,
    Column("policy_id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("operation_type", String(16), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("trigger", JSONB, nullable=False),
    Column("operation_definition", JSONB, nullable=False),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    Index("ix_policies_project_type", "project_id", "operation_type"),
)

# Which vault has which policy, projected from the vault service's cbr.vault.policy_associated / _dissociated
# events. A vault holds at most one policy of each type, hence the key. Deleting a policy deletes its rows.
bindings = Table(
    "bindings", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("operation_type", String(16), primary_key=True),
    Column("policy_id", String(36), ForeignKey("policy.policies.policy_id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("destination_vault_id", String(36), nullable=False, default=""),
    Column("project_id", String(64), nullable=False),
    Column("bound_time", DateTime(timezone=True), nullable=False),  # the association event's occurred_time
)

# The newest association event applied to each vault's policy slot. Events on different subjects reach the
# service through different consumers, so a dissociation can arrive before the association it undoes; an event
# older than the slot's changed_time is dropped. Rows outlive their binding on purpose (they are the tombstone).
binding_versions = Table(
    "binding_versions", metadata,
    Column("vault_id", String(36), primary_key=True),
    Column("operation_type", String(16), primary_key=True),
    Column("changed_time", DateTime(timezone=True), nullable=False),
)

add_outbox_tables(metadata)
