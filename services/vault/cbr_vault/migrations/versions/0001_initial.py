"""Vaults, their resources, tags, bind rules, the policy projection, outbox and inbox."""
from alembic import op
import sqlalchemy as sa

from cbr_common.migrations import create_outbox_tables

revision = "vault_0001"
down_revision = None
branch_labels = None
depends_on = None

S = "vault"


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("protect_type", sa.String(16), nullable=False),
        sa.Column("consistent_level", sa.String(32), nullable=False),
        sa.Column("size_gb", sa.BigInteger, nullable=False),
        sa.Column("used_bytes", sa.BigInteger, nullable=False),
        sa.Column("auto_expand", sa.Boolean, nullable=False),
        sa.Column("auto_bind", sa.Boolean, nullable=False),
        sa.Column("smn_notify", sa.Boolean, nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("backup_policy_id", sa.String(36)),
        sa.Column("replication_policy_id", sa.String(36)),
        sa.Column("replication_destination_vault_id", sa.String(36)),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_table(
        "vault_resources",
        sa.Column("resource_id", sa.String(36), primary_key=True),
        sa.Column("vault_id", sa.String(36), sa.ForeignKey(f"{S}.vaults.vault_id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("exclude_volumes", sa.ARRAY(sa.String(36)), nullable=False),
        sa.Column("protect_status", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("backup_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("backup_count", sa.Integer, nullable=False),
        sa.Column("added_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger, sa.Identity(), nullable=False),
        schema=S)
    op.create_table(
        "vault_tags",
        sa.Column("vault_id", sa.String(36), sa.ForeignKey(f"{S}.vaults.vault_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(36), primary_key=True),
        sa.Column("value", sa.String(43), nullable=False),
        schema=S)
    op.create_table(
        "bind_rules",
        sa.Column("vault_id", sa.String(36), sa.ForeignKey(f"{S}.vaults.vault_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(36), primary_key=True),
        sa.Column("value", sa.String(43), primary_key=True),
        schema=S)
    op.create_table(
        "policies",
        sa.Column("policy_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("operation_type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    create_outbox_tables(op, S)


def downgrade() -> None:
    for table in ("inbox", "outbox", "policies", "bind_rules", "vault_tags", "vault_resources", "vaults"):
        op.drop_table(table, schema=S)
