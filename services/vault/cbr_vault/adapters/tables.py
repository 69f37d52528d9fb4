"""The `vault` schema's tables (SQLAlchemy Core); migrations/ creates the same."""
from __future__ import annotations

from sqlalchemy import (ARRAY, BigInteger, Boolean, Column, DateTime, ForeignKey, Identity, Integer, MetaData,
                        String, Table)

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

add_outbox_tables(metadata)
