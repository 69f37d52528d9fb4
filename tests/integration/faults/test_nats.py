"""NATS stopped during a burst of events: every event committed arrives exactly once after it returns, and each
process logs the outage once when it begins and once when it ends."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter

from sqlalchemy import MetaData

from cbr.events.v1 import vault_events_pb2 as ev
from cbr_common import jetstream
from cbr_common.db import Database, UnitOfWork
from cbr_common.jetstream import EventConsumer, Subscription
from cbr_common.outages import outage_log
from cbr_common.outbox import OutboxRelay, add_outbox_tables
from tests.support.services import eventually

SUBJECT = "cbr.faulttest.vault_created"


async def test_events_of_a_burst_arrive_once_after_nats_returns(fault_infra, caplog, capsys):
    schema = f"faults_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    add_outbox_tables(metadata)
    db = Database(fault_infra.postgres.url, schema=schema, pool_size=3)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)
    nc, js = await jetstream.connect(fault_infra.nats.url)
    received: Counter = Counter()

    async def on_created(event, uow):
        received[event.vault_id] += 1

    relay = OutboxRelay(db, metadata, js, poll_seconds=0.1)
    consumer = EventConsumer(js, f"faulttest-{schema}", [Subscription(ev.VaultCreated, on_created, subject=SUBJECT)],
                             lambda: UnitOfWork(db, metadata), metadata, ack_wait=5.0)
    caplog.set_level(logging.INFO)
    outage_log("nats").reset()  # whatever an earlier test in this process left
    caplog.clear()
    running = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    sent = [f"v-{i}" for i in range(60)]
    try:
        for i, vault_id in enumerate(sent):
            async with UnitOfWork(db, metadata) as uow:
                await uow.publish(ev.VaultCreated(project_id="p", vault_id=vault_id), subject=SUBJECT)
                await uow.commit()
            if i == 20:
                fault_infra.nats.stop()
                stopped = time.monotonic()
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0)  # idle consumers and the relay meet the outage
        fault_infra.nats.start()
        back = time.monotonic()
        await eventually(lambda: _all(received, sent), timeout=60, interval=0.2)
        recovered = time.monotonic() - back
        await asyncio.sleep(1.0)  # anything delivered twice would be handled by now
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await nc.close()
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()
    assert set(received) == set(sent) and set(received.values()) == {1}, received
    # One line as the outage began and one as it ended, for the whole process (its services, relays,
    # consumers and connections); nothing from nats-py's own error logging, no idle-fetch noise.
    ours = [r for r in caplog.records if getattr(r, "fields", {}).get("dependency") == "nats"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO], \
        ([(r.levelname, r.getMessage(), r.fields) for r in ours], sorted(outage_log("nats")._down))
    assert not [r for r in caplog.records if r.name.startswith("nats") or "fetch failed" in r.getMessage()]
    with capsys.disabled():
        print(f"\n[measured] NATS down {back - stopped:.1f} s: all {len(sent)} events delivered "
              f"{recovered:.1f} s after it returned")


async def _all(received: Counter, sent: list[str]) -> bool:
    return set(received) == set(sent)
