"""A private Postgres primary with a synchronous streaming standby, and NATS, migrated, for a failover test: the
services (tests/support/services.py) connect with the multi-host URL that follows the writable node."""
from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cbr_common.migrations import upgrade
from cbr_devstack.nats import NatsServer
from cbr_devstack.pg_standby import StandbyCluster, commit_synchronously, multi_host_url
from cbr_devstack.postgres import PostgresCluster
from tests.support.stack import SERVICE_MODULES


@dataclass
class ReplicatedPostgres:
    """What the services see as `infra.postgres`: one URL naming both nodes."""

    primary: PostgresCluster
    standby: StandbyCluster

    @property
    def url(self) -> str:
        return multi_host_url(self.primary, self.standby)

    def stop(self) -> None:
        try:
            self.standby.stop()
        finally:
            self.primary.stop()


@dataclass
class StandbyInfra:
    base: Path
    postgres: ReplicatedPostgres
    nats: NatsServer
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @classmethod
    def start(cls) -> "StandbyInfra":
        base = Path(tempfile.mkdtemp(prefix="cbr-standby-"))
        # fsync stays on: the test crashes the primary and counts on what both nodes were told.
        primary = PostgresCluster(base / "pg")
        pair = ReplicatedPostgres(primary, StandbyCluster(base / "pg-standby", primary))
        infra = cls(base, pair, NatsServer(base / "nats"))
        try:
            pair.primary.start()
            for module in SERVICE_MODULES:  # before the standby: a copy made afterwards has the schemas already
                upgrade(primary.url, module)
            pair.standby.start()
            pair.standby.wait_streaming()
            commit_synchronously(primary)
            pair.standby.wait_streaming(synchronous=True)
            infra.nats.start()
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
