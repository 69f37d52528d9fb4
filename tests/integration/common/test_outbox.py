"""The transactional outbox and the inbox-deduplicating consumer, against real Postgres and a NATS we stop."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import MetaData, insert, select, update

from cbr.events.v1 import vault_events_pb2 as ev
from cbr_common import jetstream
from cbr_common.db import Database, UnitOfWork, utcnow
from cbr_common.jetstream import EventConsumer, Subscription
from cbr_common.outbox import MAX_ATTEMPTS, OutboxRelay, add_outbox_tables, outbox_table_of
from cbr_devstack.nats import NatsServer
from tests.support.services import eventually

SUBJECT = "cbr.test.vault_created"


@pytest.fixture
async def schema_db(infra):
    """A fresh schema with only an outbox and inbox, so no running service's relay touches its rows."""
    schema = f"outbox_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    add_outbox_tables(metadata)
    db = Database(infra.postgres.url, schema=schema, pool_size=2)
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)
    yield db, metadata
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    await db.close()


@pytest.fixture
async def private_nats(infra):
    server = NatsServer(infra.base / f"nats-{uuid.uuid4().hex[:6]}")
    server.start()
    nc, js = await jetstream.connect(server.url)
    yield server, nc, js
    await nc.close()
    server.stop()


async def stream_messages(js, subject: str) -> list:
    psub = await js.pull_subscribe(subject, durable=None, stream=jetstream.EVENTS_STREAM.name)
    messages = []
    while True:
        try:
            batch = await psub.fetch(batch=50, timeout=0.5)
        except Exception:  # noqa: BLE001 - FetchTimeout: nothing more
            break
        messages += batch
    await psub.unsubscribe()
    return messages


async def commit_event(db, metadata, vault_id: str) -> str:
    async with UnitOfWork(db, metadata) as uow:
        event_id = await uow.publish(ev.VaultCreated(project_id="p", vault_id=vault_id), subject=SUBJECT)
        await uow.commit()
    return event_id


async def test_event_committed_while_nats_is_down_is_published_once_when_it_returns(schema_db, private_nats):
    db, metadata = schema_db
    server, nc, js = private_nats
    relay = OutboxRelay(db, metadata, js, poll_seconds=0.1)
    server.stop()
    event_id = await commit_event(db, metadata, "v-1")
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    table = outbox_table_of(metadata)
    async with db.sessions() as session:
        row = (await session.execute(select(table))).one()
    assert row.published_time is None and row.attempts == 0  # an outage is not the row's fault

    server.start()
    await eventually(lambda: asyncio.sleep(0, result=nc.is_connected), timeout=15)
    assert await eventually(relay.publish_pending, timeout=15) == 1
    assert await relay.publish_pending() == 0

    messages = await stream_messages(js, SUBJECT)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [event_id]
    assert ev.VaultCreated.FromString(messages[0].data).vault_id == "v-1"


async def test_republished_row_is_dropped_as_duplicate(schema_db, private_nats):
    db, metadata = schema_db
    _, _, js = private_nats
    relay = OutboxRelay(db, metadata, js, poll_seconds=0.1)
    event_id = await commit_event(db, metadata, "v-2")
    assert await relay.publish_pending() == 1
    # A relay that crashed after publishing but before marking the row publishes it again.
    table = outbox_table_of(metadata)
    async with db.sessions() as session, session.begin():
        await session.execute(update(table).values(published_time=None))
    assert await relay.publish_pending() == 1
    messages = await stream_messages(js, SUBJECT)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [event_id]


async def test_relay_loop_publishes_without_polling_delay(schema_db, private_nats):
    db, metadata = schema_db
    _, _, js = private_nats
    relay = OutboxRelay(db, metadata, js, poll_seconds=30)  # only the commit wake-up can be fast
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.2)
        event_id = await commit_event(db, metadata, "v-3")

        async def seen():
            return [m.headers["Nats-Msg-Id"] for m in await stream_messages(js, SUBJECT)]
        assert await eventually(seen, timeout=5) == [event_id]
    finally:
        task.cancel()


async def test_consumer_handles_each_event_once(schema_db, private_nats):
    db, metadata = schema_db
    _, _, js = private_nats
    handled: list[str] = []

    async def handler(event, uow):
        handled.append(event.vault_id)

    consumer = EventConsumer(js, "tester", [Subscription(ev.VaultCreated, handler, subject=SUBJECT)],
                             lambda: UnitOfWork(db, metadata), metadata)
    event = ev.VaultCreated(event_id=str(uuid.uuid4()), project_id="p", vault_id="v-4")
    # The same event twice, past JetStream's own dedup (different message ids), and one other event.
    await js.publish(SUBJECT, event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})
    await js.publish(SUBJECT, event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id + "-again"})
    await js.publish(SUBJECT, event.SerializeToString())
    other = ev.VaultCreated(event_id=str(uuid.uuid4()), project_id="p", vault_id="v-5")
    await js.publish(SUBJECT, other.SerializeToString(), headers={"Nats-Msg-Id": other.event_id})
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: asyncio.sleep(0, result=len(handled) >= 2), timeout=10)
        await asyncio.sleep(1.0)  # time for any wrongful second delivery
    finally:
        task.cancel()
    assert sorted(handled) == ["v-4", "v-5"]


async def test_failing_handler_is_retried_and_commits_nothing_until_it_succeeds(schema_db, private_nats):
    db, metadata = schema_db
    _, _, js = private_nats
    attempts: list[int] = []

    async def flaky(event, uow):
        attempts.append(1)
        await commit_event(db, metadata, "side-effect")  # a separate transaction, visible either way
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    consumer = EventConsumer(js, "flaky", [Subscription(ev.VaultCreated, flaky, subject=SUBJECT)],
                             lambda: UnitOfWork(db, metadata), metadata)
    event = ev.VaultCreated(event_id=str(uuid.uuid4()), project_id="p", vault_id="v-6")
    await js.publish(SUBJECT, event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id})
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: asyncio.sleep(0, result=len(attempts) >= 3), timeout=15)
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
    assert len(attempts) == 3  # failed twice, redelivered, then recorded in the inbox and never run again


async def test_row_the_bus_refuses_is_set_aside_and_does_not_stall_the_rest(schema_db, private_nats):
    db, metadata = schema_db
    _, _, js = private_nats
    relay = OutboxRelay(db, metadata, js, poll_seconds=0.1)
    table = outbox_table_of(metadata)
    async with db.sessions() as session, session.begin():  # larger than NATS's 1 MiB max_payload
        await session.execute(insert(table).values(event_id=str(uuid.uuid4()), subject=SUBJECT,
                                                   payload=b"x" * (2 << 20), created_time=utcnow()))
    event_id = await commit_event(db, metadata, "after-poison")
    for _ in range(MAX_ATTEMPTS):
        assert await relay.publish_pending() == 0  # order is kept: the refused row goes first
    assert await relay.publish_pending() == 1
    assert [m.headers["Nats-Msg-Id"] for m in await stream_messages(js, SUBJECT)] == [event_id]
    async with db.sessions() as session:
        poison = (await session.execute(select(table).where(table.c.published_time.is_(None)))).one()
    assert poison.attempts == MAX_ATTEMPTS
