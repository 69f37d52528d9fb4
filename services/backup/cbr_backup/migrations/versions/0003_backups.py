"""Checkpoints, backups, vault keys, the one-job-per-resource guard, and the job columns of tasks."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

revision = "backup_0003"
down_revision = "backup_0002"
branch_labels = None
depends_on = None

S = "backup"


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("params", JSONB, nullable=False, server_default="{}"), schema=S)
    op.add_column("tasks", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("tasks", sa.Column("worker_id", sa.String(64)), schema=S)
    op.add_column("tasks", _ts("heartbeat_time"), schema=S)
    op.create_table(
        "vault_keys",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("id_key", sa.LargeBinary, nullable=False),
        _ts("created_time", False),
        schema=S)
    op.create_table(
        "checkpoints",
        sa.Column("checkpoint_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("incremental", sa.Boolean, nullable=False),
        sa.Column("auto_trigger", sa.Boolean, nullable=False),
        sa.Column("policy_id", sa.String(36)),
        sa.Column("skipped", JSONB, nullable=False),
        _ts("created_time", False),
        schema=S)
    op.create_index("ix_checkpoints_vault_id", "checkpoints", ["vault_id"], schema=S)
    op.create_index("ix_checkpoints_project_created", "checkpoints", ["project_id", "created_time"], schema=S)
    op.create_table(
        "backups",
        sa.Column("backup_id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("checkpoint_id", sa.String(36), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("parent_id", sa.String(36)),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("resource_name", sa.String(255), nullable=False),
        sa.Column("resource_type", sa.String(8), nullable=False),
        sa.Column("resource_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("device", sa.String(8)),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("image_type", sa.String(16), nullable=False),
        sa.Column("incremental", sa.Boolean, nullable=False),
        sa.Column("auto_trigger", sa.Boolean, nullable=False),
        sa.Column("policy_id", sa.String(36)),
        sa.Column("logical_bytes", sa.BigInteger, nullable=False),
        sa.Column("stored_bytes", sa.BigInteger, nullable=False),
        sa.Column("manifest_kind", sa.String(8), nullable=False),
        sa.Column("manifest_id", sa.String(80)),
        sa.Column("base_backup_id", sa.String(36)),
        sa.Column("task_id", sa.String(36)),
        sa.Column("corrupt", sa.Boolean, nullable=False),
        _ts("verified_time"),
        _ts("created_time", False),
        _ts("updated_time", False),
        _ts("started_time"),
        _ts("protected_time"),
        _ts("expired_time"),
        schema=S)
    for column in ("checkpoint_id", "vault_id", "parent_id", "resource_id"):
        op.create_index(f"ix_backups_{column}", "backups", [column], schema=S)
    op.create_index("ix_backups_project_created", "backups", ["project_id", "created_time"], schema=S)
    op.create_table(
        "resource_jobs",
        sa.Column("resource_id", sa.String(36), primary_key=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("operation_type", sa.String(32), nullable=False),
        _ts("created_time", False),
        schema=S)


def downgrade() -> None:
    op.drop_table("resource_jobs", schema=S)
    op.drop_table("backups", schema=S)
    op.drop_table("checkpoints", schema=S)
    op.drop_table("vault_keys", schema=S)
    for column in ("heartbeat_time", "worker_id", "attempts", "params"):
        op.drop_column("tasks", column, schema=S)
