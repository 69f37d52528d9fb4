"""The chunk index: which chunks each vault's store holds, their sizes, and when a backup last referenced them."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0002"
down_revision = "backup_0001"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.create_table(
        "chunks",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("digest", sa.LargeBinary, primary_key=True),
        sa.Column("raw_size", sa.Integer, nullable=False),
        sa.Column("stored_size", sa.Integer, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_referenced_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_index("ix_chunks_last_referenced", "chunks", ["last_referenced_time"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_chunks_last_referenced", "chunks", schema=S)
    op.drop_table("chunks", schema=S)
