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
# answer in time. TimeoutError covers asyncio's and nats-py's (a subclass).
_DOWN = (UnavailableError, psycopg.OperationalError, psycopg.InterfaceError, sa_exc.OperationalError,
         sa_exc.InterfaceError, sa_exc.TimeoutError, nats_errors.ConnectionClosedError, nats_errors.NoServersError,
         nats_errors.NoRespondersError, nats_errors.StaleConnectionError, nats_errors.OutboundBufferLimitError,
         nats_errors.ConnectionReconnectingError, NoStreamResponseError, ServiceUnavailableError, TimeoutError,
         ConnectionError)


def is_outage(exc: BaseException | None) -> bool:
    """Whether exc, or an error it was raised from, says a dependency (the database, NATS) is unreachable. A
    query the server cancelled for running too long is not an outage: the server answered."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return False
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, _DOWN):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class OutageLog:
    """One warning when a dependency stops answering and one info line when it is back, per process and
    dependency: a long outage does not drown the log, and its length is in the second line."""

    def __init__(self, logger: logging.Logger, dependency: str, activity: str):
        self._log = logger
        self._fields = {"dependency": dependency, "activity": activity}
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:

        if self._since is None:
            self._since = time.monotonic()
            self._log.warning("%s unavailable: %s waits for it", self._fields["dependency"], self._fields["activity"],
                              extra={"fields": {**self._fields, "error": repr(exc)[:300]}})

    def ok(self) -> None:

        if self._since is not None:
            seconds = round(time.monotonic() - self._since, 1)
            self._since = None
            self._log.info("%s available again", self._fields["dependency"],
                           extra={"fields": {**self._fields, "outage_seconds": seconds}})
