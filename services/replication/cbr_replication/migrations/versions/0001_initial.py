"""The replication schema's outbox and inbox; its own tables arrive with its issue."""
from alembic import op

from cbr_common.migrations import create_outbox_tables

revision = "replication_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op, "replication")


def downgrade() -> None:
    op.drop_table("inbox", schema="replication")
    op.drop_table("outbox", schema="replication")
