"""Replication records (one backup's replication to one destination vault) and ReplicateCheckpoint requests."""
from alembic import op
import sqlalchemy as sa

revision = "replication_0002"
down_revision = "replication_0001"
branch_labels = None
depends_on = None

S = "replication"


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("replication_record_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("source_region", sa.String(63), nullable=False),
        sa.Column("source_vault_id", sa.String(36), nullable=False),
        sa.Column("source_backup_id", sa.String(36), nullable=False),
        sa.Column("resource_type", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("destination_region", sa.String(63), nullable=False),
        sa.Column("destination_project_id", sa.String(64), nullable=False),
        sa.Column("destination_vault_id", sa.String(36), nullable=False),
        sa.Column("destination_backup_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
        sa.Column("request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("checkpoint_request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("auto_trigger", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("policy_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("retention", sa.LargeBinary),
        sa.Column("task_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        _count("bytes_done"), _count("bytes_total"), _count("chunk_bytes_sent"), _count("present_bytes"),
        _count("resent_bytes"), _count("metadata_bytes"), _count("chunks_sent"), _count("chunks_present"),
        sa.Column("source_manifest_digest", sa.LargeBinary, nullable=False, server_default=sa.text("''::bytea")),
        sa.Column("replica_manifest_digest", sa.LargeBinary, nullable=False, server_default=sa.text("''::bytea")),
        sa.Column("error_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("error_message", sa.Text, nullable=False, server_default=""),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_time", sa.DateTime(timezone=True)),
        sa.Column("ended_time", sa.DateTime(timezone=True)),
        schema=S)
    op.create_index("ux_records_request", "records", ["project_id", "request_id"], unique=True, schema=S,
                    postgresql_where=sa.text("request_id <> ''"))
    op.create_index("ux_records_open", "records", ["source_backup_id", "destination_region", "destination_vault_id"],
                    unique=True, schema=S, postgresql_where=sa.text("status IN ('waiting', 'replicating')"))
    op.create_index("ix_records_backup", "records", ["source_backup_id", "destination_region",
                                                     "destination_vault_id"], schema=S)
    op.create_index("ix_records_project_created", "records", ["project_id", "created_time"], schema=S)
    op.create_index("ix_records_checkpoint_request", "records", ["project_id", "checkpoint_request_id"], schema=S,
                    postgresql_where=sa.text("checkpoint_request_id <> ''"))
    op.create_table(
        "checkpoint_requests",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("destination_region", sa.String(63), nullable=False),
        sa.Column("destination_project_id", sa.String(64), nullable=False),
        sa.Column("destination_vault_id", sa.String(36), nullable=False),
        sa.Column("auto_trigger", sa.Boolean, nullable=False),
        sa.Column("policy_id", sa.String(36), nullable=False, server_default=""),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)


def downgrade() -> None:
    op.drop_table("checkpoint_requests", schema=S)
    op.drop_table("records", schema=S)
