"""A record's pace (DESIGN 17.11): the rate_limit_mbps its request asked for; 0 is none."""
from alembic import op
import sqlalchemy as sa

revision = "replication_0004"
down_revision = "replication_0003"
branch_labels = None
depends_on = None

S = "replication"


def upgrade() -> None:
    op.add_column("records", sa.Column("rate_limit_mbps", sa.Float, nullable=False, server_default="0"), schema=S)


def downgrade() -> None:
    op.drop_column("records", "rate_limit_mbps", schema=S)
