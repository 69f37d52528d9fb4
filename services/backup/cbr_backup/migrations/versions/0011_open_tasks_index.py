"""The open tasks (waiting or running), indexed apart: the metrics sampler counts them every few seconds, and the
task table keeps every job ever run."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0011"
down_revision = "backup_0010"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.create_index("ix_tasks_open", "tasks", ["operation_type", "created_time"], schema=S,
                    postgresql_where=sa.text("status IN ('waiting', 'running')"))


def downgrade() -> None:
    op.drop_index("ix_tasks_open", "tasks", schema=S)
