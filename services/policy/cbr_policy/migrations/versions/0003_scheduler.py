"""The scheduler's tables: next fire time per (policy, vault), ticks, and vaults due for retention."""
from alembic import op
import sqlalchemy as sa

revision = "policy_0003"
down_revision = "policy_0002"
branch_labels = None
depends_on = None

S = "policy"


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("policy_id", sa.String(36), primary_key=True),
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        _ts("next_fire_time", False),
        _ts("policy_version", False),
        sa.Column("last_checkpoint_id", sa.String(36)),
        sa.Column("fired_count", sa.Integer, nullable=False, server_default="0"),
        schema=S)
    op.create_index("ix_schedules_next_fire", "schedules", ["next_fire_time"], schema=S)
    op.create_table(
        "ticks",
        sa.Column("tick_id", sa.String(36), primary_key=True),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("operation_type", sa.String(16), nullable=False),
        _ts("scheduled_time", False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("checkpoint_id", sa.String(36)),
        _ts("fired_time"),
        _ts("claimed_time"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("created_time", False),
        sa.UniqueConstraint("policy_id", "vault_id", "scheduled_time", name="uq_ticks_policy_vault_time"),
        schema=S)
    op.create_index("ix_ticks_project_scheduled", "ticks", ["project_id", "scheduled_time"], schema=S)
    op.create_index("ix_ticks_status_claimed", "ticks", ["status", "claimed_time"], schema=S)
    op.create_table(
        "retention_due",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        _ts("due_time", False),
        schema=S)


def downgrade() -> None:
    op.drop_table("retention_due", schema=S)
    op.drop_table("ticks", schema=S)
    op.drop_table("schedules", schema=S)
