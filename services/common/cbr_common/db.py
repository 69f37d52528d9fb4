"""Async SQLAlchemy engine on psycopg 3, and the unit of work every use case runs in."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Callable

import psycopg
from google.protobuf.message import Message
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cbr_common.errors import ConflictError, UnavailableError
from cbr_common.outbox import outbox_table_of


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Database:
    """Owns the engine and session factory for one service's schema."""

    def __init__(self, url: str, schema: str, pool_size: int = 10):
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=True, pool_size=pool_size,
                                                       max_overflow=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.on_commit_with_events: list[Callable[[], None]] = []  # e.g. wake the outbox relay

    async def close(self) -> None:
        await self.engine.dispose()


class UnitOfWork:
    """`async with uow:` opens a transaction; `await uow.commit()` commits it; leaving without commit rolls back.

    Events added with `publish` are written to the schema's outbox in the same transaction, so a state
    change and the news of it commit together or not at all.
    """

    def __init__(self, db: Database, metadata):
        self._db = db
        self._outbox = outbox_table_of(metadata)
        self.session: AsyncSession | None = None
        self._events = 0

    async def __aenter__(self) -> "UnitOfWork":
        self.session = self._db.sessions()
        self._events = 0
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            await self.session.rollback()
            await self.session.close()
        except sa_exc.DBAPIError:
            pass  # the connection is already gone; the original error says more
        if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, psycopg.errors.TransactionRollback):
            raise ConflictError("a concurrent change won, try again") from exc  # serialization failure, deadlock
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or (
                isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
            raise UnavailableError("database unavailable, try again") from exc

    async def commit(self) -> None:
        await self.session.commit()
        if self._events:
            for callback in self._db.on_commit_with_events:
                callback()
            self._events = 0

    async def publish(self, subject: str, event: Message) -> str:
        """Stamps event_id and occurred_time and queues the event in the outbox. Returns the event id."""
        event_id = str(uuid.uuid4())
        event.event_id = event_id
        event.occurred_time.FromDatetime(utcnow())
        await self.session.execute(insert(self._outbox).values(
            event_id=event_id, subject=subject, payload=event.SerializeToString(), created_time=utcnow()))
        self._events += 1
        return event_id
