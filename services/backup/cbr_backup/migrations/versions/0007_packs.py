"""Pack files (DESIGN.md section 13): a chunk row names the pack holding its value and its offset there.

Both nullable: rows from before packs name a lone chunk object under <vault>/chunks/ and stay readable.
"""
from alembic import op
import sqlalchemy as sa

revision = "backup_0007"
down_revision = "backup_0006"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.add_column("chunks", sa.Column("pack_id", sa.LargeBinary, nullable=True), schema=S)
    op.add_column("chunks", sa.Column("pack_offset", sa.BigInteger, nullable=True), schema=S)


def downgrade() -> None:
    op.drop_column("chunks", "pack_offset", schema=S)
    op.drop_column("chunks", "pack_id", schema=S)
