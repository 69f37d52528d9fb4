"""Alembic glue shared by the services: one schema and one version table per service, run under a lock."""
from __future__ import annotations

import importlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config

# Any constant works; it only keeps two migrators (compose replicas, parallel `make up`) from racing.
MIGRATION_LOCK_KEY = 0x0CB2_0001


def run_alembic_env(schema: str) -> None:
    """Body of each service's migrations/env.py."""
    # postgresql+psycopg serves both the services' async engines and Alembic's sync one.
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        context.configure(connection=connection, version_table_schema=schema, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
        connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
    engine.dispose()


def create_outbox_tables(op, schema: str) -> None:
    """The outbox and inbox every service keeps (see cbr_common.outbox)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_time", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        schema=schema)
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], schema=schema,
                    postgresql_where=sa.text("published_time IS NULL"))
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("received_time", sa.DateTime(timezone=True), nullable=False),
        schema=schema)


def upgrade(database_url: str, service_module: str) -> None:
    """Brings `<service_module>`'s schema to head, from the module's migrations/ (its env.py names the schema)."""
    module = importlib.import_module(service_module)
    location = Path(next(iter(module.__path__))) / "migrations"
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")
