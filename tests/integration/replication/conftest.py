"""A source region (its own Postgres, NATS, services and worker: region-a) whose directory names a stand-in
destination (region-b, answering CheckDestination only), a region nobody serves (region-c) and a region that
refuses this region's credential (region-d). Until the destination's backup service serves the transfer API, the
source's records are moved by task updates the tests publish themselves."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from cbr.events.v1 import replication_events_pb2 as ev
from cbr_common.db import utcnow
from cbr_common.outbox import MSG_ID_HEADER
from cbr_common.subjects import subject_of
from cbr_devstack.ports import free_port
from tests.integration.replication.destination_fake import FakeDestination
from tests.support.backups import backup_now, disk_in_vault
from tests.support.regions import two_regions  # noqa: F401  (two full regions, for the destination's tests)
from tests.support.services import Services
from tests.support.stack import Infra

REGION_A, REGION_B, REGION_DOWN, REGION_REFUSING = "region-a", "region-b", "region-c", "region-d"


@dataclass
class SourceRegion:
    services: Services
    destination: FakeDestination
    infra: Infra

    def caller(self, project_id: str | None = None):
        return self.services.caller(project_id)

    async def rows(self, query: str, *params) -> list[tuple]:
        async with await psycopg.AsyncConnection.connect(self.infra.postgres.conninfo()) as conn:
            return await (await conn.execute(query, params)).fetchall()

    async def published(self, subject: str, message_type):
        """The events of this type the replication service queued (its outbox), oldest first."""
        rows = await self.rows("SELECT payload FROM replication.outbox WHERE subject = %s ORDER BY id", subject)
        return [message_type.FromString(bytes(payload)) for (payload,) in rows]

    async def task_update(self, record, state: str, **fields) -> None:
        """What the backup service would publish on cbr.backup.replication_<state>."""
        event = ev.ReplicationTaskUpdate(event_id=str(uuid.uuid4()), project_id=record.project_id,
                                         replication_record_id=record.replication_record_id, state=state, **fields)
        event.occurred_time.FromDatetime(utcnow())
        await self.publish(event, subject_of(ev.ReplicationTaskUpdate, state))

    async def publish(self, event, subject: str) -> None:
        js = self.services.runtimes["backup"].js
        await js.publish(subject, event.SerializeToString(), headers={MSG_ID_HEADER: event.event_id})


def directory(infra: Infra, destination: FakeDestination) -> str:
    good, bad = infra.base / "region-b.token", infra.base / "region-d.token"
    good.write_text(destination.token + "\n")
    bad.write_text("a token region-d never issued\n")
    peers = [{"name": REGION_B, "transfer_addr": destination.address, "credential_file": str(good)},
             {"name": REGION_DOWN, "transfer_addr": f"127.0.0.1:{free_port()}", "credential_file": str(good)},
             {"name": REGION_REFUSING, "transfer_addr": destination.address, "credential_file": str(bad)}]
    path = infra.base / "regions.json"
    path.write_text(json.dumps({"dev_plaintext": True, "peers": peers}))
    return str(path)


@pytest.fixture(scope="module")
async def source_region():
    destination = await FakeDestination(token=uuid.uuid4().hex).start()
    infra = Infra.start()
    try:
        services = await Services.start(infra, region=REGION_A, regions_file=directory(infra, destination))
        try:
            yield SourceRegion(services, destination, infra)
        finally:
            await services.stop()
    finally:
        infra.stop()
        await destination.stop()


@dataclass
class Source:
    caller: object
    vault_id: str
    backup: object


@pytest.fixture(scope="module")
async def source(source_region) -> Source:
    """A project of region-a with a disk vault and one available backup of it."""
    caller = source_region.caller()
    _, vault = await disk_in_vault(caller, seed=12)
    return Source(caller, vault.vault_id, await backup_now(caller, vault.vault_id))
