"""Checkpoints remember the caller's request_id, so a retried CreateCheckpoint returns the first checkpoint."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0004"
down_revision = "backup_0003"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.add_column("checkpoints", sa.Column("request_id", sa.String(64)), schema=S)
    op.create_index("uq_checkpoints_request", "checkpoints", ["project_id", "request_id"], unique=True, schema=S)


def downgrade() -> None:
    op.drop_index("uq_checkpoints_request", "checkpoints", schema=S)
    op.drop_column("checkpoints", "request_id", schema=S)
