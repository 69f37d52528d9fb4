"""The transactional outbox and inbox tables, and the relay that publishes outbox rows to JetStream."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging

from nats import errors as nats_errors
from nats.js.errors import NoStreamResponseError
from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, String, Table, select, update

from cbr_common.outages import is_outage, outage_log

log = logging.getLogger("cbr.outbox")

MSG_ID_HEADER = "Nats-Msg-Id"
# A row the bus refused this often is left for an operator (published_time stays NULL); outages do not count.
MAX_ATTEMPTS = 10
# Errors that mean "NATS is not there right now", as opposed to "NATS refused this message".
TRANSPORT_ERRORS = (nats_errors.TimeoutError, nats_errors.ConnectionClosedError, nats_errors.NoServersError,
                    nats_errors.NoRespondersError, nats_errors.StaleConnectionError, nats_errors.OutboundBufferLimitError,
                    NoStreamResponseError, asyncio.TimeoutError, ConnectionError, OSError)


def add_outbox_tables(metadata: MetaData) -> None:
    """Declares `<schema>.outbox` and `<schema>.inbox` on a service's metadata."""
    Table("outbox", metadata,
          Column("id", BigInteger, primary_key=True, autoincrement=True),
          Column("event_id", String(36), nullable=False, unique=True),
          Column("subject", String(255), nullable=False),
          Column("payload", LargeBinary, nullable=False),
          Column("created_time", DateTime(timezone=True), nullable=False),
          Column("published_time", DateTime(timezone=True), index=True),
          Column("attempts", Integer, nullable=False, server_default="0"))
    Table("inbox", metadata,
          Column("consumer", String(128), primary_key=True),
          Column("event_id", String(64), primary_key=True),
          Column("received_time", DateTime(timezone=True), nullable=False))


def outbox_table_of(metadata: MetaData) -> Table:
    return metadata.tables[f"{metadata.schema}.outbox"]


def inbox_table_of(metadata: MetaData) -> Table:
    return metadata.tables[f"{metadata.schema}.inbox"]


class OutboxRelay:
    """Publishes unpublished outbox rows in id order with Nats-Msg-Id = event id, then marks them published.

    A crash between publish and mark republishes the row; JetStream's duplicate window drops it, and the
    consumers' inbox drops anything older. Several relays may run: rows are claimed with SKIP LOCKED.
    """

    def __init__(self, db, metadata: MetaData, js, poll_seconds: float = 0.5, batch: int = 100):
        self._db = db
        self._table = outbox_table_of(metadata)
        self._js = js
        self._poll = poll_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        db.on_commit_with_events.append(self._wake.set)
        self._bus = outage_log("nats")
        self._who = f"outbox relay {metadata.schema} {id(self):x}"  # several may share a process (tests)
        self._db_outage = outage_log("database")

    async def publish_pending(self) -> int:
        """One pass: publishes what it can and returns how many rows it published."""
        table = self._table
        async with self._db.sessions() as session, session.begin():
            rows = (await session.execute(
                select(table.c.id, table.c.event_id, table.c.subject, table.c.payload)
                .where(table.c.published_time.is_(None), table.c.attempts < MAX_ATTEMPTS).order_by(table.c.id)
                .limit(self._batch).with_for_update(skip_locked=True))).all()
            done: list[int] = []
            failed_id, bus_down = None, False
            for row in rows:
                try:
                    await self._js.publish(row.subject, row.payload, headers={MSG_ID_HEADER: row.event_id},
                                           timeout=2.0)
                except Exception as exc:  # noqa: BLE001 - keep the row; stop here so order is kept
                    failed_id, bus_down = row.id, isinstance(exc, TRANSPORT_ERRORS)
                    if bus_down:
                        self._bus.failed(exc, self._who)
                    else:
                        log.warning("outbox publish refused", extra={"fields": {"subject": row.subject,
                                                                                "error": repr(exc)[:300]}})
                    break
                done.append(row.id)
            now = dt.datetime.now(dt.timezone.utc)
            if done:
                await session.execute(update(table).where(table.c.id.in_(done)).values(published_time=now))
            if failed_id is not None and not bus_down:
                # The bus answered but refused this row (too large, bad subject): count it, so a row that
                # can never be published is set aside after MAX_ATTEMPTS instead of stalling every later one.
                await session.execute(update(table).where(table.c.id == failed_id)
                                      .values(attempts=table.c.attempts + 1))
        if done:
            self._bus.ok(self._who)
        if bus_down and not done:
            raise ConnectionError("event bus unavailable")
        return len(done)

    async def run(self) -> None:
        backoff = self._poll
        while True:
            try:
                published = await self.publish_pending()
                self._db_outage.ok(self._who)
                backoff = self._poll
            except Exception as exc:  # noqa: BLE001 - the relay must outlive outages of NATS and Postgres
                if not self._bus.down:  # a bus outage was logged where it was met
                    if is_outage(exc):
                        self._db_outage.failed(exc, self._who)
                    else:
                        log.warning("outbox relay pass failed", extra={"fields": {"error": repr(exc)[:300]}})
                published = 0
                backoff = min(backoff * 2, 2.0)
            if published:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except asyncio.TimeoutError:
                pass
