"""NATS JetStream: connection, the streams CBR uses, and durable pull consumers that dedup through an inbox."""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import APIError, BadRequestError, ServiceUnavailableError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cbr_common.db import utcnow
from cbr_common.outages import OutageLog, is_outage, outage_log
from cbr_common.outbox import MSG_ID_HEADER, inbox_table_of
from cbr_common.subjects import subject_of

log = logging.getLogger("cbr.jetstream")

EVENTS_STREAM = StreamConfig(
    name="CBR_EVENTS", subjects=["cbr.>"], retention=RetentionPolicy.LIMITS,
    max_age=7 * 24 * 3600.0, duplicate_window=15 * 60.0)


# A stream with replicas needs the cluster's JetStream meta leader; one is elected within seconds of a start or of
# losing the last one. Creating a stream waits this long for it.
STREAM_READY_TIMEOUT = 30.0


def server_list(url: str) -> list[str]:
    """CBR_NATS_URL's servers: one URL, or a cluster's nodes comma-separated (nats://a:4222,nats://b:4222)."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no NATS server in the URL")
    return servers


async def connect(url: str, replicas: int = 1):
    """Connects with endless reconnects, so a NATS restart is survived, and makes sure the streams exist.
    `url` may name several servers (a cluster): the client starts at any of them and moves to another when its
    own goes; `replicas` is the streams' replica count (CBR_NATS_REPLICAS, 3 on a three-node cluster)."""
    bus, who, client = outage_log("nats"), f"connection {uuid.uuid4().hex[:8]}", []

    async def on_error(exc: Exception) -> None:  # instead of nats-py's, which logs every reconnect attempt
        if is_outage(exc) or isinstance(exc, OSError):
            bus.failed(exc, who)
        else:
            log.warning("nats error", extra={"fields": {"error": repr(exc)[:300]}})

    async def on_disconnected() -> None:
        if client and not client[0].is_closed:  # closing is not an outage
            bus.failed(ConnectionError("disconnected"), who)

    async def on_reconnected() -> None:
        bus.ok(who)

    async def on_closed() -> None:
        bus.ok(who)

    nc = await nats.connect(server_list(url), name="cbr", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                            connect_timeout=5, error_cb=on_error, disconnected_cb=on_disconnected,
                            reconnected_cb=on_reconnected, closed_cb=on_closed)
    client.append(nc)
    js = nc.jetstream(timeout=5)
    await ensure_stream(js, EVENTS_STREAM, replicas)
    return nc, js


async def ensure_stream(js, config: StreamConfig, replicas: int = 1, timeout: float = STREAM_READY_TIMEOUT) -> None:
    """Creates the stream with `replicas` copies, or brings an existing one to these settings, and returns once
    the stream has a leader, so that publishes are taken. On a cluster that is still electing its meta leader
    (just started, or a node lost) the request fails for a moment, and a stream whose nodes restart has no leader
    for a moment although the request succeeds: both are tried again, for `timeout` seconds at most (a single
    server, replicas 1, answers at once or fails)."""
    config = dataclasses.replace(config, num_replicas=replicas)
    deadline = time.monotonic() + (timeout if replicas > 1 else 0.0)
    while True:
        try:
            try:
                info = await js.add_stream(config)
            except BadRequestError as exc:
                if exc.err_code in NOT_READY_CODES:
                    raise
                info = await js.update_stream(config)  # exists with other settings: bring it to ours
            while replicas > 1 and not (info.cluster and info.cluster.leader):
                if time.monotonic() > deadline:
                    log.warning("stream has no leader", extra={"fields": {"stream": config.name,
                                                                          "seconds": timeout}})
                    raise nats.errors.TimeoutError()
                await asyncio.sleep(0.2)
                info = await js.stream_info(config.name)
            return
        except (APIError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            not_ready = not isinstance(exc, APIError) or isinstance(exc, ServiceUnavailableError) \
                or exc.err_code in NOT_READY_CODES
            if not not_ready or time.monotonic() > deadline:
                raise
            log.info("waiting for JetStream to create a stream", extra={"fields": {
                "stream": config.name, "error": repr(exc)[:200]}})
            await asyncio.sleep(0.5)


# "JetStream system temporarily unavailable" and "insufficient resources" (too few peers known yet for the
# replicas): what a cluster answers while it elects its meta leader or its nodes are still joining.
NOT_READY_CODES = (10008, 10023)


MAX_REDELIVERY_DELAY = 60.0


def client_closed(js) -> bool:
    """The client was closed (the process is stopping): it never reconnects, so its loops end."""
    nc = getattr(js, "_nc", None)
    return nc is not None and nc.is_closed


def idle_or_down(js, outage: OutageLog, who: str) -> None:
    """A fetch that timed out: the queue was idle (silent), or the client is cut off from NATS (an outage)."""
    nc = getattr(js, "_nc", None)
    if nc is None or nc.is_connected:
        outage.ok(who)
    else:
        outage.failed(ConnectionError("not connected to NATS"), who)

Handler = Callable[[object, object], Awaitable[None]]  # (event message, unit of work) -> None


@dataclass(frozen=True)
class Subscription:
    """A handler for one event; its subject comes from cbr_common/subjects.py (`subject` only for a test's own)."""
    message_type: type
    handler: Handler
    kind: str = ""
    subject: str = ""

    def __post_init__(self):
        if not self.subject:
            object.__setattr__(self, "subject", subject_of(self.message_type, self.kind))


class EventConsumer:
    """A durable pull consumer per subject. Each event runs its handler inside a unit of work that first
    records the event id in the inbox; a duplicate finds its id there and is only acked. The ack comes
    after the commit, so a crash in between redelivers and the inbox drops it."""

    def __init__(self, js, name: str, subscriptions: list[Subscription], make_uow: Callable[[], object],
                 metadata, ack_wait: float = 30.0, max_deliver: int = -1):
        self._js = js
        self._name = name
        self._subs = subscriptions
        self._make_uow = make_uow
        self._inbox = inbox_table_of(metadata)
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._bus = outage_log("nats")
        self._db = outage_log("database")
        self._who = f"consumer {name} {id(self):x}"  # several may share a process (tests)

    def durable_for(self, subject: str) -> str:
        return f"{self._name}-{subject.replace('.', '_').replace('>', 'all').replace('*', 'any')}"

    async def run(self) -> None:
        await asyncio.gather(*(self._run_one(sub) for sub in self._subs))

    async def _run_one(self, sub: Subscription) -> None:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                ack_wait=self._ack_wait, max_deliver=self._max_deliver)
        psub = None
        while psub is None:
            try:
                psub = await self._js.pull_subscribe(sub.subject, durable=self.durable_for(sub.subject),
                                                     stream=EVENTS_STREAM.name, config=config)
            except Exception as exc:  # noqa: BLE001 - NATS may be restarting; keep trying
                if client_closed(self._js):
                    return
                self._bus.failed(exc, self._who)
                await asyncio.sleep(1.0)
        while True:
            try:
                messages = await psub.fetch(batch=20, timeout=1.0)
            except TimeoutError:  # asyncio's and nats-py's timeouts alike
                idle_or_down(self._js, self._bus, self._who)
                continue
            except Exception as exc:  # noqa: BLE001
                if client_closed(self._js):
                    self._bus.ok(self._who)  # not an outage: it is shutting down
                    return
                self._bus.failed(exc, self._who)
                await asyncio.sleep(1.0)
                continue
            self._bus.ok(self._who)
            for msg in messages:
                await self._handle(sub, msg)

    async def _handle(self, sub: Subscription, msg) -> None:
        try:
            event = sub.message_type.FromString(msg.data)
            # The event's own id is its identity; the header only drives JetStream's short dedup window.
            event_id = getattr(event, "event_id", "") or (msg.headers or {}).get(MSG_ID_HEADER, "")
            if not event_id:
                raise ValueError("event without id")
        except Exception as exc:  # noqa: BLE001 - a message that cannot be read never will be
            log.error("dropping unreadable event", extra={"fields": {"subject": msg.subject, "error": repr(exc)}})
            await msg.term()
            return
        try:
            async with self._make_uow() as uow:
                fresh = (await uow.session.execute(
                    pg_insert(self._inbox).values(consumer=self._name, event_id=event_id,
                                                  received_time=utcnow())
                    .on_conflict_do_nothing().returning(self._inbox.c.event_id))).first()
                if fresh is not None:
                    await sub.handler(event, uow)
                await uow.commit()
            self._db.ok(self._who)
        except Exception as exc:  # noqa: BLE001 - redeliver later; the inbox keeps it exactly-once
            outage = is_outage(exc)
            if outage:
                self._db.failed(exc, self._who)
            else:
                log.warning("event handler failed", extra={"fields": {"subject": msg.subject, "event_id": event_id,
                                                                      "error": repr(exc)[:300]}})
            try:
                # Redelivered until it succeeds (max_deliver -1): a database outage must not drop events, and
                # an event that waited out an outage goes again soon after it.
                delay = 1.0 if outage else min(2.0 ** msg.metadata.num_delivered, MAX_REDELIVERY_DELAY)
                await msg.nak(delay=delay)
            except Exception:  # noqa: BLE001
                pass
            return
        try:
            await msg.ack()
        except Exception as exc:  # noqa: BLE001 - redelivered later, and the inbox drops it then
            self._bus.failed(exc, self._who)
