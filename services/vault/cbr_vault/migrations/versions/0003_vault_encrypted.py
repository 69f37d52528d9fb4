"""Whether a vault's backups are encrypted. Vaults from before say false (their data was stored unencrypted);
new ones are encrypted unless created asking otherwise."""
from alembic import op
import sqlalchemy as sa

revision = "vault_0003"
down_revision = "vault_0002"
branch_labels = None
depends_on = None

S = "vault"


def upgrade() -> None:
    op.add_column("vaults", sa.Column("encrypted", sa.Boolean, nullable=False, server_default=sa.false()), schema=S)
    op.alter_column("vaults", "encrypted", server_default=sa.true(), schema=S)


def downgrade() -> None:
    op.drop_column("vaults", "encrypted", schema=S)
