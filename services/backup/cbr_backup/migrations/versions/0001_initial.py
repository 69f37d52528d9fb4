"""The local provider's inventory (servers, disks, file systems), the task log, outbox and inbox."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cbr_common.migrations import create_outbox_tables

revision = "backup_0001"
down_revision = None
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("server_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_table(
        "disks",
        sa.Column("disk_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("server_id", sa.String(36), sa.ForeignKey(f"{S}.servers.server_id"), index=True),
        sa.Column("device", sa.String(8)),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("server_id", "device", name="uq_disks_server_device"),
        schema=S)
    op.create_table(
        "file_systems",
        sa.Column("fs_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("operation_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("bytes_total", sa.BigInteger, nullable=False),
        sa.Column("vault_id", sa.String(36), index=True),
        sa.Column("vault_name", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(36), index=True),
        sa.Column("resource_name", sa.String(255), nullable=False),
        sa.Column("backup_id", sa.String(36)),
        sa.Column("checkpoint_id", sa.String(36)),
        sa.Column("policy_id", sa.String(36)),
        sa.Column("error_code", sa.String(64), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("extra_info", postgresql.JSONB, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_time", sa.DateTime(timezone=True)),
        sa.Column("ended_time", sa.DateTime(timezone=True)),
        sa.Column("updated_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_index("ix_tasks_project_created", "tasks", ["project_id", "created_time"], schema=S)
    create_outbox_tables(op, S)


def downgrade() -> None:
    op.drop_index("ix_tasks_project_created", "tasks", schema=S)
    for table in ("inbox", "outbox", "tasks", "file_systems", "disks", "servers"):
        op.drop_table(table, schema=S)
