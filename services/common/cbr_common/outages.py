"""Dependency outages: telling one from a real failure, and logging it once when it begins and once when it ends."""
from __future__ import annotations

import logging
import time

import psycopg
from nats import errors as nats_errors
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from sqlalchemy import exc as sa_exc

from cbr_common.errors import UnavailableError

# "Not there right now", as opposed to "refused this": a connection lost or refused, a server that does not
# answer in time, a Postgres node that no longer takes writes (a standby, or a primary being demoted: the
# writable node is elsewhere for now). TimeoutError covers asyncio's and nats-py's (a subclass).
_DOWN = (UnavailableError, psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction,
         sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, nats_errors.ConnectionClosedError,
         nats_errors.NoServersError,
         nats_errors.NoRespondersError, nats_errors.StaleConnectionError, nats_errors.OutboundBufferLimitError,
         nats_errors.ConnectionReconnectingError, NoStreamResponseError, ServiceUnavailableError, TimeoutError,
         ConnectionError)


def is_outage(exc: BaseException | None) -> bool:
    """Whether exc, or an error it was raised from, says a dependency (the database, NATS) is unreachable. A
    statement the server cancelled for running too long is not an outage: the server answered."""
    chain = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, psycopg.errors.QueryCanceled) for e in chain):
        return False
    return any(isinstance(e, _DOWN) or (isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated)
               for e in chain)


class OutageLog:
    """One warning when a dependency stops answering and one info line when it is back: a long outage does not
    drown the log, and its length is in the second line. Use `outage_log(dependency)`: one per process and
    dependency, shared by everything in the process that meets it. Each reporter (`who`: a connection, a
    consumer, the relay, the worker) that saw it fail says when it works again; the outage ends with the last."""

    def __init__(self, dependency: str):
        self.dependency = dependency
        self._down: set[str] = set()
        self._since = 0.0

    @property
    def down(self) -> bool:
        return bool(self._down)

    def failed(self, exc: BaseException, who: str) -> None:
        if not self._down:
            self._since = time.monotonic()
            log.warning("%s unavailable; work that needs it waits", self.dependency, extra={"fields": {
                "dependency": self.dependency, "noticed_by": who, "error": repr(exc)[:300]}})
        self._down.add(who)

    def ok(self, who: str) -> None:
        if who in self._down:
            self._down.discard(who)
            if not self._down:
                log.info("%s available again", self.dependency, extra={"fields": {
                    "dependency": self.dependency, "outage_seconds": round(time.monotonic() - self._since, 1)}})

    def reset(self) -> None:
        """Forgets every reporter, silently (a reporter that stopped for good, a test's fresh start)."""
        self._down.clear()


log = logging.getLogger("cbr.outage")
_LOGS: dict[str, OutageLog] = {}


def outage_log(dependency: str) -> OutageLog:
    """The process's outage log of one dependency ("database", "nats")."""
    return _LOGS.setdefault(dependency, OutageLog(dependency))
