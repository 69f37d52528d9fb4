"""The audit trail: every state-changing call to the region's services (cbr.audit.recorded events)."""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "vault_0004"
down_revision = "vault_0003"
branch_labels = None
depends_on = None

S = "vault"


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("roles", ARRAY(sa.Text), nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("ids", JSONB, nullable=False),
        sa.Column("id_values", ARRAY(sa.Text), nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("code", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("cbr_code", sa.Text, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=False),
        sa.Column("peer", sa.Text, nullable=False),
        sa.Column("recorded_time", sa.DateTime(timezone=True), nullable=False),
        schema=S)
    op.create_index("audit_events_project_time", "audit_events", ["project_id", "time"], schema=S)
    op.create_index("audit_events_time", "audit_events", ["time"], schema=S)
    op.create_index("audit_events_id_values", "audit_events", ["id_values"], schema=S, postgresql_using="gin")


def downgrade() -> None:
    op.drop_table("audit_events", schema=S)
