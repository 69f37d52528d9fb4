"""A private Postgres and nats-server on free ports under a temp folder, migrated, for one test session."""
from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cbr_common.migrations import upgrade
from cbr_devstack.nats import NatsServer
from cbr_devstack.postgres import PostgresCluster

SERVICE_MODULES = ("cbr_vault", "cbr_backup", "cbr_policy", "cbr_replication")


@dataclass
class Infra:
    base: Path
    postgres: PostgresCluster
    nats: NatsServer
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @classmethod
    def start(cls) -> "Infra":
        base = Path(tempfile.mkdtemp(prefix="cbr-test-"))
        postgres = PostgresCluster(base / "pg", fast=True)
        nats = NatsServer(base / "nats")
        infra = cls(base, postgres, nats)
        try:
            postgres.start()
            nats.start()
            for module in SERVICE_MODULES:
                upgrade(postgres.url, module)
        except BaseException:
            infra.stop()
            raise
        return infra

    def fresh_database(self, *modules: str) -> str:
        """A new database in the same cluster with these services' schemas: for tests that must not share
        tables with the running services (e.g. a scheduler on a hand-moved clock). Returns its URL."""
        import uuid
        import psycopg
        name = f"cbr_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.postgres.url.rsplit("/", 1)[0] + "/" + name
        for module in modules:
            upgrade(url, module)
        return url

    def stop(self) -> None:
        try:
            self.nats.stop()
        finally:
            try:
                self.postgres.stop()
            finally:
                shutil.rmtree(self.base, ignore_errors=True)
