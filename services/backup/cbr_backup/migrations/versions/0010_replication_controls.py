"""Replication controls (DESIGN 17.11): a job's own pace, and the slot it holds to its destination region."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0010"
down_revision = "backup_0009"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.add_column("replication_jobs", sa.Column("rate_limit_mbps", sa.Float, nullable=False, server_default="0"),
                  schema=S)
    op.add_column("replication_jobs", sa.Column("slot_held", sa.Boolean, nullable=False, server_default=sa.false()),
                  schema=S)
    op.create_index("ix_replication_jobs_slots", "replication_jobs", ["destination_region"], schema=S,
                    postgresql_where=sa.text("slot_held"))


def downgrade() -> None:
    op.drop_index("ix_replication_jobs_slots", "replication_jobs", schema=S)
    op.drop_column("replication_jobs", "slot_held", schema=S)
    op.drop_column("replication_jobs", "rate_limit_mbps", schema=S)
