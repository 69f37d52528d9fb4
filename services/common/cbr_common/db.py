"""Async SQLAlchemy engine on psycopg 3, and the unit of work every use case runs in.

Every wait on the database is bounded, so a database that stops answering (paused, unreachable) makes a call fail
with UnavailableError within seconds instead of hanging: connecting (connect_timeout), taking a pooled connection
(pool_timeout), and each statement: the server cancels it after statement_timeout, and should the server not
answer at all, the client gives up a little later and closes the connection (BoundedConnection). Long jobs ask
for a budget of their own (`UnitOfWork(..., statement_seconds=...)`).

With a standby, CBR_DATABASE_URL names every node (`?host=h1,h2&port=p1,p2&target_session_attrs=read-write`):
psycopg tries them in order, each within connect_timeout, and keeps the first that takes writes. A failover is
then an outage like any other: a pooled connection to the lost primary fails its pre-ping and is replaced, a call
meanwhile answers UNAVAILABLE, and the next connection lands on the promoted node.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import AsyncIterator, Callable

import psycopg
from google.protobuf.message import Message
from sqlalchemy import event, insert, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cbr_common.errors import ConflictError, UnavailableError
from cbr_common.outbox import outbox_table_of
from cbr_common.subjects import subject_of


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


CLIENT_GRACE_SECONDS = 1.0  # past the server's own statement timeout: only a server that does not answer
PING_SECONDS = 2.0


class BoundedConnection(psycopg.AsyncConnection):
    """A connection whose every wait for the server ends after `budget` seconds: the server is then taken for
    gone, the connection is closed (the pool drops it) and the call fails with OperationalError."""

    budget: float = 30.0

    async def wait(self, gen, interval: float = 0.1, timeout: float | None = None):
        try:
            return await super().wait(gen, interval=interval, timeout=timeout or self.budget)
        except psycopg.errors._WaitTimeout:  # noqa: SLF001 - psycopg's own signal for a wait that ran out
            await self.close()
            raise psycopg.OperationalError(f"the database did not answer within {self.budget:g} s") from None


class Database:
    """Owns the engine and session factory for one service's schema."""

    def __init__(self, url: str, schema: str, pool_size: int = 10, connect_timeout: float = 2.0,
                 statement_timeout: float = 5.0, pool_timeout: float = 5.0):
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout,
            connect_args={"async_creator_fn": BoundedConnection.connect,
                          "connect_timeout": max(1, round(connect_timeout)),
                          "options": f"-c statement_timeout={int(statement_timeout * 1000)}"})
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads of one statement need no transaction: in autocommit they cost no BEGIN and no ROLLBACK round trip.
        self._read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.on_commit_with_events: list[Callable[[], None]] = []  # e.g. wake the outbox relay

        # A pooled connection waits PING_SECONDS for the ping that checks it out (a live server answers in
        # milliseconds), then the statement budget while it is out.
        pool = self.engine.sync_engine.pool

        @event.listens_for(pool, "connect")
        @event.listens_for(pool, "checkout")
        def _statement_budget(dbapi_connection, *_):
            self.set_budget(dbapi_connection.driver_connection, statement_timeout)

        @event.listens_for(pool, "checkin")
        def _ping_budget(dbapi_connection, *_):
            if dbapi_connection is not None:
                dbapi_connection.driver_connection.budget = PING_SECONDS

    @staticmethod
    def set_budget(connection: BoundedConnection, statement_seconds: float) -> None:
        connection.budget = statement_seconds + CLIENT_GRACE_SECONDS

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def reads(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection, without a session or a transaction, for the hot reads that fit one statement
        each (a point read, a page): database errors leave as UnitOfWork's do."""
        try:
            async with self._read_engine.connect() as connection:
                yield connection
        except Exception as exc:  # noqa: BLE001 - mapped, or raised as it was
            unavailable_or_conflict(exc)
            raise


def on_read_only_node(exc: BaseException | None) -> bool:
    """A write met a node that no longer takes writes (a demoted primary, a standby): try the others."""
    return isinstance(getattr(exc, "orig", None), psycopg.errors.ReadOnlySqlTransaction)


def unavailable_or_conflict(exc: BaseException | None) -> None:
    """Raises the CBR error a database failure means to a caller (try again), if it is one: the one mapping of
    UnitOfWork and Database.reads."""
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, psycopg.errors.TransactionRollback):
        raise ConflictError("a concurrent change won, try again") from exc  # serialization failure, deadlock
    if on_read_only_node(exc) or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                                                  sa_exc.TimeoutError)) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        raise UnavailableError("database unavailable, try again") from exc


class UnitOfWork:
    """`async with uow:` opens a transaction; `await uow.commit()` commits it; leaving without commit rolls back.

    Events added with `publish` are written to the schema's outbox in the same transaction, so a state
    change and the news of it commit together or not at all.
    """

    def __init__(self, db: Database, metadata, statement_seconds: float | None = None):
        self._db = db
        self._outbox = outbox_table_of(metadata)
        self._statement_seconds = statement_seconds  # a long job's budget; None: the database's default
        self.session: AsyncSession | None = None
        self._events = 0
        self._after_commit: list[Callable[[], None]] = []

    async def __aenter__(self) -> "UnitOfWork":
        self.session = self._db.sessions()
        self._events = 0
        self._after_commit = []
        if self._statement_seconds:
            try:
                connection = await self.session.connection()
                raw = await connection.get_raw_connection()
                Database.set_budget(raw.driver_connection, self._statement_seconds)  # back to default at checkin
                milliseconds = int(self._statement_seconds * 1000)
                await self.session.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
            except BaseException as exc:
                await self.__aexit__(type(exc), exc, None)
                raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if on_read_only_node(exc):  # its connection must not go back to the pool
                await self.session.invalidate()
            await self.session.rollback()
            await self.session.close()
        except Exception:  # noqa: BLE001 - the connection is already gone; the original error says more
            pass
        unavailable_or_conflict(exc)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Runs callback once this transaction commits (a metric counts what happened, never a rolled-back try)."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        await self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()
        if self._events:
            for callback in self._db.on_commit_with_events:
                callback()
            self._events = 0

    async def publish(self, event: Message, kind: str = "", *, subject: str = "") -> str:
        """Stamps event_id and occurred_time and queues the event in the outbox, on the subject the table in
        cbr_common/subjects.py gives its type (and kind); `subject` for what is not an event (a job on its work
        queue) and a test's private subject. Returns the event id."""
        subject = subject or subject_of(type(event), kind)
        event_id = str(uuid.uuid4())
        event.event_id = event_id
        event.occurred_time.FromDatetime(utcnow())
        await self.session.execute(insert(self._outbox).values(
            event_id=event_id, subject=subject, payload=event.SerializeToString(), created_time=utcnow()))
        self._events += 1
        return event_id
