"""Alembic environment of the policy schema."""
from cbr_common.migrations import run_alembic_env

run_alembic_env(schema="policy")
