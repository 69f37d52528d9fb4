"""Retention rules that travelled with auto replicas (schedule_tables.replica_rules)."""
from alembic import op
import sqlalchemy as sa

revision = "policy_0004"
down_revision = "policy_0003"
branch_labels = None
depends_on = None

S = "policy"


def upgrade() -> None:
    op.create_table(
        "replica_rules",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("policy_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in (
            "max_backups", "retention_duration_days", "day_backups", "week_backups", "month_backups",
            "year_backups")),
        sa.Column("timezone", sa.String(16), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade() -> None:
    op.drop_table("replica_rules", schema=S)
