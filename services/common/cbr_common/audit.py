"""The audit trail's producing side: a server interceptor that records every state-changing call as an event.

Which calls: those whose method needs write access (auth.required_access: WRITE or POLICY_WRITE), whatever their
answer; reads and the region-to-region transfer API (service only) are not recorded. Who: the subject, project and
roles of the caller's token; a call refused for want of a valid token has no one to file it under (and an
anonymous caller must not be able to fill the trail), so it is only logged, as before. What: service and method.
Which ids: every `*_id` / `*_ids` field of the request and of the response, nested messages included. The outcome:
the gRPC code, its message and the CBR code of the error details.

The interceptor sits outside the call guard (cbr_common.interceptor), so it sees refusals of the guard too
(permission, request checks), and writes the record to the service's own outbox before the caller gets its answer:
a caller that saw an answer has its call on record. The relay publishes it on cbr.audit.recorded and the vault
service keeps the trail (cbr_vault/service/audit.py). A write that fails is retried in the background for about
a minute and a half, then logged at error level with the whole record.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
import uuid
from typing import Iterable

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cbr.events.v1 import audit_events_pb2
from cbr_common import auth
from cbr_common.errors import CbrError
from cbr_common.interceptor import WrappedHandlers, rewrapped
from cbr_common.outbox import add_outbox_tables, outbox_table_of
from cbr_common.subjects import subject_of

log = logging.getLogger("cbr.audit")

AUDITED_ACCESS = frozenset({auth.Access.WRITE, auth.Access.POLICY_WRITE})
# `*_id` fields that name no resource: the caller's project is the record's own field, the rest are not ids of
# things a call changes (provider_id is a fixed id per resource type).
NOT_RESOURCE_IDS = frozenset({"request_id", "event_id", "provider_id"})
MAX_IDS = 64          # ids kept per call: a call that names more (a batch) keeps its first ones
MAX_DEPTH = 4         # nested messages looked into
MAX_ID_CHARS = 128    # of one id value (a refused call may carry anything)
MAX_TEXT_CHARS = 300  # of the subject, a status message, a request id
DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "cbr"
CANCELLED_MESSAGE = "the call ended before its answer (cancelled by the caller, or its deadline passed)"
INLINE_WAIT_SECONDS = 3.0  # a caller waits this long at most for its record (the database answers in ms)
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 15, 15, 15, 15)  # after a failed write, then the record goes to the log

# A call cancelled, or a response stream its caller left: the task ends now, so the write goes on without it.
ENDED_EARLY = (asyncio.CancelledError, GeneratorExit)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def is_audited(full_method: str) -> bool:
    """Whether a call of `full_method` ('/cbr.vault.v1.VaultService/DeleteVault') goes on the trail."""
    return not auth.is_public(full_method) and auth.required_access(full_method) in AUDITED_ACCESS


def clean(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Text fit for the trail: control characters (a NUL cannot even be stored) shown as '?', at most `limit`."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def ids_of(*messages: object) -> list[tuple[str, str]]:
    """The (field, id) pairs of the messages, in field order, each once: `x_id` fields as they are, each item of
    an `x_ids` list as `x_id`, `id` fields of nested messages likewise; project ids, request ids and event ids
    are not resource ids. Anything that is not a protobuf message (an undecodable body) has none."""
    found: dict[tuple[str, str], None] = {}
    for message in messages:
        if isinstance(message, Message):
            _collect(message, found, 0)
    return list(found)


def _collect(message: Message, found: dict, depth: int) -> None:
    for field, value in message.ListFields():
        if len(found) >= MAX_IDS:
            return
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= MAX_DEPTH or field.message_type.GetOptions().map_entry:
                continue
            for item in (value if field.is_repeated else (value,)):
                _collect(item, found, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            name = _id_name(field)
            if name:
                for item in (value if field.is_repeated else (value,)):
                    if item and len(found) < MAX_IDS:
                        found.setdefault((name, clean(item, MAX_ID_CHARS)), None)


def _id_name(field: FieldDescriptor) -> str:
    """The name an id field's values are recorded under; '' for a field that holds no resource ids."""
    name = field.name
    if field.is_repeated and name.endswith("_ids"):
        name = name[:-1]
    elif field.is_repeated or not name.endswith("_id"):
        return ""
    if name in NOT_RESOURCE_IDS or name.endswith("project_id"):
        return ""
    return name


def request_id_of(request: object, metadata: Iterable[tuple[str, object]] | None) -> str:
    """The request's own `request_id` (an idempotency key), else an `x-request-id` metadata value, else ''."""
    value = getattr(request, "request_id", "") if isinstance(request, Message) else ""
    if not value:
        for key, item in metadata or ():
            if key.lower() == "x-request-id":
                value = item if isinstance(item, str) else item.decode(errors="replace")
                break
    return clean(value) if isinstance(value, str) else ""


def cbr_code_of(trailing_metadata: Iterable[tuple[str, object]] | None) -> str:
    """The CBR code (ErrorInfo reason, domain cbr) in a status's details, as cbr_common.grpc_errors sends it."""
    for key, value in trailing_metadata or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - not ours to judge; the code is optional
            return ""
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return clean(info.reason)
    return ""


def _code_name(code: object) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else "UNKNOWN"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return clean(value) if isinstance(value, str) else ""


def _principal() -> auth.Principal | None:
    try:
        return auth.current_principal()
    except CbrError:
        return None


class AuditRecorder:
    """Writes audit records to one service's outbox (`<schema>.outbox`), each in a transaction of its own."""

    def __init__(self, db):
        self._db = db
        metadata = MetaData(schema=db.schema)
        add_outbox_tables(metadata)  # the schema's own outbox, declared again here as every service declares it
        self._outbox = outbox_table_of(metadata)
        self._subject = subject_of(audit_events_pb2.AuditRecorded)
        self._pending: set[asyncio.Task] = set()

    async def record(self, event: audit_events_pb2.AuditRecorded) -> None:
        """Returns once the record is written, or its first write failed or took longer than INLINE_WAIT_SECONDS
        (a database outage: the caller gets its answer, the write goes on in the background); a cancel of the
        caller does not stop the write."""
        first = asyncio.get_running_loop().create_future()
        self.record_soon(event, first)
        try:
            await asyncio.wait_for(asyncio.shield(first), INLINE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass

    def record_soon(self, event: audit_events_pb2.AuditRecorded, first: asyncio.Future | None = None) -> None:
        task = asyncio.get_running_loop().create_task(self._persist(event, first), name="audit-record")
        self._pending.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    async def _persist(self, event, first: asyncio.Future | None) -> None:
        event.event_id = event.event_id or str(uuid.uuid4())  # kept across retries: the outbox row is written once
        if not event.HasField("occurred_time"):
            event.occurred_time.FromDatetime(dt.datetime.now(dt.timezone.utc))
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                await self._write(event)
                return
            except Exception as exc:  # noqa: BLE001 - an outage of the database: try again, then log the record
                if attempt == 0:
                    log.warning("audit record not written yet, retrying",
                                extra={"fields": {"method": event.method, "error": repr(exc)[:300]}})
            finally:
                if first is not None and not first.done():
                    first.set_result(None)
            if delay is not None:
                await asyncio.sleep(delay)
        log.error("audit record lost: the database refused it for too long; the record follows",
                  extra={"fields": {"record": json.dumps(json_format.MessageToDict(
                      event, preserving_proto_field_name=True))}})

    async def _write(self, event) -> None:
        async with self._db.sessions() as session, session.begin():
            await session.execute(pg_insert(self._outbox).values(
                event_id=event.event_id, subject=self._subject, payload=event.SerializeToString(),
                created_time=dt.datetime.now(dt.timezone.utc)).on_conflict_do_nothing(index_elements=["event_id"]))
        for callback in self._db.on_commit_with_events:  # wake the relay
            callback()


class _Call:
    """What the trail needs of one call, gathered as it arrives."""

    def __init__(self, method: str, request: object, context, streams_requests: bool):
        self.method = method
        self.arrived = dt.datetime.now(dt.timezone.utc)
        self.started = time.monotonic()
        metadata = context.invocation_metadata()
        self.request = None if streams_requests else request
        self.request_id = request_id_of(self.request, metadata)
        self.peer = _text(context.peer())

    def event(self, context, response: object = None, error: BaseException | None = None
              ) -> audit_events_pb2.AuditRecorded | None:
        principal = _principal()
        if principal is None:
            return None  # no valid token: nobody to file it under (the guard logged the refusal)
        if isinstance(error, ENDED_EARLY):
            code, message, cbr_code = "CANCELLED", CANCELLED_MESSAGE, ""
        else:
            code = _code_name(context.code())
            if error is not None and code == "OK":
                code = "UNKNOWN"  # an error that left without a status (the guard maps every one it sees)
            message = _text(context.details()) if code != "OK" else ""
            cbr_code = cbr_code_of(context.trailing_metadata()) if code != "OK" else ""
        service, method = auth.split_method(self.method)
        event = audit_events_pb2.AuditRecorded(
            project_id=clean(principal.project_id), subject=clean(principal.subject),
            roles=[clean(r) for r in sorted(principal.roles)], service=service, method=method,
            ids=[audit_events_pb2.AuditedId(name=n, value=v) for n, v in ids_of(self.request, response)],
            request_id=self.request_id, code=code, message=message, cbr_code=cbr_code, peer=self.peer,
            duration_ms=int((time.monotonic() - self.started) * 1000))
        event.call_time.FromDatetime(self.arrived)
        return event


class AuditTrail(grpc.aio.ServerInterceptor):
    """Records each audited call once it has its answer. It must come before the call guard in the server's
    interceptors, so that it wraps the guard and sees its refusals."""

    def __init__(self, recorder: AuditRecorder):
        self._recorder = recorder
        self._handlers = WrappedHandlers()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not is_audited(details.method):
            return handler
        return self._handlers.get(details.method, handler, self._wrap_handler)

    def _wrap_handler(self, handler, method: str):
        def wrap(behavior, kind: str):
            by_shape = self._wrap_stream if kind.endswith("_stream") else self._wrap_unary
            return by_shape(behavior, method, kind.startswith("stream_"))
        return rewrapped(handler, wrap)

    def _wrap_unary(self, behavior, method: str, streams_requests: bool):
        async def audited(request, context):
            auth.set_principal(None)  # whoever the guard finds, and no one else's
            call = _Call(method, request, context, streams_requests)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                await self._record(call.event(context, error=exc), cancelled=isinstance(exc, ENDED_EARLY))
                raise
            await self._record(call.event(context, response))
            return response
        return audited

    def _wrap_stream(self, behavior, method: str, streams_requests: bool):
        async def audited(request, context):
            auth.set_principal(None)
            call = _Call(method, request, context, streams_requests)
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                await self._record(call.event(context, error=exc), cancelled=isinstance(exc, ENDED_EARLY))
                raise
            await self._record(call.event(context))
        return audited

    async def _record(self, event, cancelled: bool = False) -> None:
        if event is None:
            return
        if cancelled:
            self._recorder.record_soon(event)
        else:
            await self._recorder.record(event)


def interceptors(db) -> list[grpc.aio.ServerInterceptor]:
    """The audit interceptor for a server whose service writes to `db` (a cbr_common.db.Database); none without."""
    return [] if db is None else [AuditTrail(AuditRecorder(db))]
