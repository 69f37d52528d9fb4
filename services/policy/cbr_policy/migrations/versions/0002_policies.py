"""Policies, and the vault bindings projected from the vault service's events."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

revision = "policy_0002"
down_revision = "policy_0001"
branch_labels = None
depends_on = None

S = "policy"


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("policy_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("operation_type", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("trigger", JSONB, nullable=False),
        sa.Column("operation_definition", JSONB, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_index("ix_policies_project_type", "policies", ["project_id", "operation_type"], schema=S)
    op.create_table(
        "bindings",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("operation_type", sa.String(16), primary_key=True),
        sa.Column("policy_id", sa.String(36), sa.ForeignKey(f"{S}.policies.policy_id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("destination_vault_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("bound_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_table(
        "binding_versions",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("operation_type", sa.String(16), primary_key=True),
        sa.Column("changed_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade() -> None:
    for table in ("binding_versions", "bindings", "policies"):
        op.drop_table(table, schema=S)
