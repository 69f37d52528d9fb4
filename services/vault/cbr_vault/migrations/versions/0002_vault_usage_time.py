"""When the vault's used_bytes was measured, so a usage event that arrives late cannot overwrite a newer one."""
from alembic import op
import sqlalchemy as sa

revision = "vault_0002"
down_revision = "vault_0001"
branch_labels = None
depends_on = None

S = "vault"


def upgrade() -> None:
    op.add_column("vaults", sa.Column("used_measured_time", sa.DateTime(timezone=True)), schema=S)


def downgrade() -> None:
    op.drop_column("vaults", "used_measured_time", schema=S)
