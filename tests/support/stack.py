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

    def stop(self) -> None:
        try:
            self.nats.stop()
        finally:
            try:
                self.postgres.stop()
            finally:
                shutil.rmtree(self.base, ignore_errors=True)
