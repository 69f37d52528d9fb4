"""Replicas received from other regions (DESIGN.md 17.3-17.8): namespaces of source vaults' id keys, transfers with
their staged manifests, want-lists, packs and dictionaries, and the provenance columns of a replica's backup rows."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

revision = "backup_0008"
down_revision = "backup_0007"
branch_labels = None
depends_on = None

S = "backup"
TZ = sa.DateTime(timezone=True)
PROVENANCE = (("namespace_id", sa.String(36)), ("source_region", sa.String(63)),
              ("source_project_id", sa.String(64)), ("source_vault_id", sa.String(36)),
              ("source_backup_id", sa.String(36)), ("replication_record_id", sa.String(36)),
              ("source_manifest_digest", sa.LargeBinary), ("manifest_digest", sa.LargeBinary))


def upgrade() -> None:
    for name, kind in PROVENANCE:
        op.add_column("backups", sa.Column(name, kind, nullable=True), schema=S)
    op.create_table(
        "replica_namespaces",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("namespace_id", sa.String(36), primary_key=True),
        sa.Column("source_region", sa.String(63), nullable=False),
        sa.Column("source_vault_id", sa.String(36), nullable=False),
        sa.Column("kek_id", sa.String(128), nullable=False),
        sa.Column("wrapped_id_key", sa.LargeBinary, nullable=False),
        sa.Column("key_check", sa.LargeBinary, nullable=False),
        sa.Column("created_time", TZ, nullable=False),
        sa.UniqueConstraint("vault_id", "source_region", "source_vault_id", name="uq_replica_namespaces_source"),
        schema=S)
    op.create_table(
        "replica_transfers",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("source_region", sa.String(63), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("source_project_id", sa.String(64), nullable=False),
        sa.Column("source_vault_id", sa.String(36), nullable=False),
        sa.Column("source_backup_id", sa.String(36), nullable=False),
        sa.Column("source_backup", JSONB, nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("namespace_id", sa.String(36), nullable=False),
        sa.Column("key_check", sa.LargeBinary, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("retention", JSONB),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("wanted_ready", sa.Boolean, nullable=False),
        sa.Column("backup_id", sa.String(36)),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in (
            "chunks_received", "stored_bytes", "present_chunks", "present_bytes", "rejected_chunks")),
        sa.Column("started_time", TZ, nullable=False),
        sa.Column("last_activity_time", TZ, nullable=False),
        sa.Column("ended_time", TZ),
        sa.UniqueConstraint("source_region", "record_id", name="uq_replica_transfers_record"),
        schema=S)
    op.create_index("ix_replica_transfers_vault_id", "replica_transfers", ["vault_id"], schema=S)
    op.create_table(
        "replica_transfer_manifests",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("source_backup_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("parent_replica_backup_id", sa.String(36)),
        sa.Column("digest", sa.LargeBinary, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        schema=S)
    op.create_table(
        "replica_transfer_wanted",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("digest", sa.LargeBinary, primary_key=True),
        sa.Column("raw_size", sa.Integer, nullable=False),
        schema=S)
    op.create_table(
        "replica_transfer_packs",
        sa.Column("transfer_id", sa.String(36), primary_key=True),
        sa.Column("pack_id", sa.LargeBinary, primary_key=True),
        sa.Column("created_time", TZ, nullable=False),
        schema=S)
    op.create_table(
        "replica_dictionaries",
        sa.Column("vault_id", sa.String(36), primary_key=True),
        sa.Column("namespace_id", sa.String(36), primary_key=True),
        sa.Column("dictionary_id", sa.LargeBinary, primary_key=True),
        sa.Column("created_time", TZ, nullable=False),
        schema=S)


def downgrade() -> None:
    for table in ("replica_dictionaries", "replica_transfer_packs", "replica_transfer_wanted",
                  "replica_transfer_manifests", "replica_transfers", "replica_namespaces"):
        op.drop_table(table, schema=S)
    for name, _ in reversed(PROVENANCE):
        op.drop_column("backups", name, schema=S)
