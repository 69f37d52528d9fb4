"""Alembic environment of the backup schema."""
from cbr_common.migrations import run_alembic_env

run_alembic_env(schema="backup")
