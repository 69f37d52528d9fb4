"""Vault keys are kept wrapped by the key provider's KEK (kek_id names it); the clear id_key column stays only
until the backup service's start wraps what it holds (cbr_backup.keys.lifecycle.wrap_clear_keys), then is empty."""
from alembic import op
import sqlalchemy as sa

revision = "backup_0006"
down_revision = "backup_0005"
branch_labels = None
depends_on = None

S = "backup"


def upgrade() -> None:
    op.add_column("vault_keys", sa.Column("kek_id", sa.String(128)), schema=S)
    op.add_column("vault_keys", sa.Column("wrapped_id_key", sa.LargeBinary), schema=S)
    op.add_column("vault_keys", sa.Column("wrapped_enc_key", sa.LargeBinary), schema=S)
    op.alter_column("vault_keys", "id_key", nullable=True, schema=S)
    op.create_check_constraint("ck_vault_keys_clear_or_wrapped", "vault_keys",
                               "(id_key IS NULL) <> (wrapped_id_key IS NULL)", schema=S)


def downgrade() -> None:
    # Wrapped keys cannot be unwrapped here (no KEK): refuse rather than lose them.
    op.execute("DO $$ BEGIN IF EXISTS (SELECT 1 FROM backup.vault_keys WHERE id_key IS NULL) THEN "
               "RAISE EXCEPTION 'vault_keys holds wrapped keys; a downgrade would lose them'; END IF; END $$")
    op.drop_constraint("ck_vault_keys_clear_or_wrapped", "vault_keys", schema=S)
    op.alter_column("vault_keys", "id_key", nullable=False, schema=S)
    op.drop_column("vault_keys", "wrapped_enc_key", schema=S)
    op.drop_column("vault_keys", "wrapped_id_key", schema=S)
    op.drop_column("vault_keys", "kek_id", schema=S)
