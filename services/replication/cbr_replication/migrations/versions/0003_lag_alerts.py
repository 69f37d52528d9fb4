"""The lag check's state: the vaults it watches (from replication policy ticks) and the published crossings."""
from alembic import op
import sqlalchemy as sa

revision = "replication_0003"
down_revision = "replication_0002"
branch_labels = None
depends_on = None

S = "replication"


def upgrade() -> None:
    op.create_table(
        "lag_watches",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("source_vault_id", sa.String(36), primary_key=True),
        sa.Column("destination_region", sa.String(63), primary_key=True),
        sa.Column("policy_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("seen_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_table(
        "lagging",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("source_vault_id", sa.String(36), primary_key=True),
        sa.Column("resource_id", sa.String(36), primary_key=True),
        sa.Column("destination_region", sa.String(63), primary_key=True),
        sa.Column("oldest_unreplicated_backup_id", sa.String(36), nullable=False),
        sa.Column("crossed_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade() -> None:
    op.drop_table("lagging", schema=S)
    op.drop_table("lag_watches", schema=S)
