"""Telling an outage from a failure, and logging an outage once as it begins and once as it ends."""
from __future__ import annotations

import logging

import psycopg
from nats import errors as nats_errors

from cbr_common.errors import UnavailableError
from cbr_common.outages import OutageLog, is_outage


def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_outages_and_failures():
    assert is_outage(psycopg.OperationalError("cannot exit pipeline mode while busy"))
    assert is_outage(raised_from(UnavailableError("database unavailable"), ConnectionRefusedError()))
    assert is_outage(nats_errors.ConnectionClosedError())
    assert is_outage(nats_errors.TimeoutError())
    assert not is_outage(raised_from(UnavailableError("x"), psycopg.errors.QueryCanceled("statement timeout")))
    assert not is_outage(OSError(28, "No space left on device"))
    assert not is_outage(ValueError("bad"))
    assert not is_outage(None)


def test_one_line_as_an_outage_begins_and_one_as_the_last_reporter_sees_it_end(caplog):
    caplog.set_level(logging.INFO, logger="cbr.outage")
    outage = OutageLog("database")
    for _ in range(30):
        outage.failed(ConnectionRefusedError(), "relay")
        outage.failed(ConnectionRefusedError(), "consumer")
    outage.ok("relay")
    assert outage.down  # the consumer has not seen it back yet
    outage.ok("consumer")
    outage.ok("consumer")
    assert not outage.down
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "database unavailable; work that needs it waits"), ("INFO", "database available again")]
