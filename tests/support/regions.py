"""Two full regions on one machine for the replication tests: each its own Postgres, NATS, chunk store, pool,
services and worker, with a region directory naming the other (plaintext: the dev switch) and the region_peer
token the other accepts from it (services/backup/DESIGN.md 17.1). Started once per session, when a test asks."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from cbr_common.regions import issue_peer_token
from cbr_devstack.ports import free_port
from tests.support.services import Services
from tests.support.stack import Infra

REGION_A, REGION_B = "region-a", "region-b"
PEER_TOKEN_TTL = 24 * 3600


@dataclass
class TwoRegions:
    a: Services
    b: Services

    def region(self, name: str) -> Services:
        return {REGION_A: self.a, REGION_B: self.b}[name]


def write_directory(infra: Infra, local: str, peer: str, peer_backup_addr: str, peer_secret: str) -> Path:
    """infra's region directory naming `peer` (its backup service serves RegionTransferService)."""
    token = infra.base / f"peer-{peer}.token"
    token.write_text(issue_peer_token(peer_secret, local, ttl_seconds=PEER_TOKEN_TTL) + "\n")
    token.chmod(0o600)
    path = infra.base / "regions.json"
    path.write_text(json.dumps({"dev_plaintext": True, "peers": [
        {"name": peer, "transfer_addr": peer_backup_addr, "credential_file": str(token)}]}))
    return path


@pytest.fixture(scope="session")
async def two_regions():
    infras = {REGION_A: Infra.start()}
    try:
        infras[REGION_B] = Infra.start()
        backup_addrs = {name: f"127.0.0.1:{free_port()}" for name in infras}
        regions: dict[str, Services] = {}
        for local, peer in ((REGION_A, REGION_B), (REGION_B, REGION_A)):
            directory = write_directory(infras[local], local, peer, backup_addrs[peer], infras[peer].jwt_secret)
            regions[local] = await Services.start(infras[local], peers={"backup": backup_addrs[local]},
                                                  region=local, regions_file=str(directory))
        try:
            yield TwoRegions(regions[REGION_A], regions[REGION_B])
        finally:
            for services in regions.values():
                await services.stop()
    finally:
        for infra in infras.values():
            infra.stop()
