"""The source side of replication (DESIGN.md 17.2, 17.9): a row per replication task with its destination, its
transfer and the record's exact counters."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0009"
down_revision = "backup_0008"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.create_table(
        "replication_jobs",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("source_vault_id", sa.String(36), nullable=False),
        sa.Column("source_backup_id", sa.String(36), nullable=False),
        sa.Column("destination_region", sa.String(63), nullable=False),
        sa.Column("destination_project_id", sa.String(64), nullable=False),
        sa.Column("destination_vault_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
        sa.Column("auto_trigger", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("policy_id", sa.String(36)),
        sa.Column("retention", sa.LargeBinary),
        sa.Column("transfer_id", sa.String(64)),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
          for name in ("chunk_bytes_sent", "present_bytes", "resent_bytes", "metadata_bytes", "chunks_sent",
                       "chunks_present")),
        sa.Column("present_known", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("sent_through", sa.LargeBinary),
        sa.Column("destination_backup_id", sa.String(36)),
        sa.Column("source_manifest_digest", sa.LargeBinary),
        sa.Column("replica_manifest_digest", sa.LargeBinary),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S,
    )
    op.create_index("ix_replication_jobs_source_backup_id", "replication_jobs", ["source_backup_id"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_replication_jobs_source_backup_id", "replication_jobs", schema=S)
    op.drop_table("replication_jobs", schema=S)
