"""Backups record what they added to their vault (chunks first stored by them) beside what they reference."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0005"
down_revision = "backup_0004"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.add_column("backups", sa.Column("added_bytes", sa.BigInteger, nullable=False, server_default="0"), schema=S)


def downgrade() -> None:
    op.drop_column("backups", "added_bytes", schema=S)
