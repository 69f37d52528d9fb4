"""ListAuditEvents over gRPC: the request's filters in, the audit records out."""
from __future__ import annotations

import datetime as dt
from typing import Callable

from cbr.vault.v1 import vault_pb2
from cbr_common.auth import current_principal
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.domain.audit import AuditedCall
from cbr_vault.service import audit


def event_out(call: AuditedCall) -> vault_pb2.AuditEvent:
    event = vault_pb2.AuditEvent(
        event_id=call.event_id, project_id=call.project_id, subject=call.subject, roles=list(call.roles),
        service=call.service, method=call.method, ids=[vault_pb2.AuditedId(name=n, value=v) for n, v in call.ids],
        request_id=call.request_id, code=call.code, message=call.message, cbr_code=call.cbr_code,
        duration_ms=call.duration_ms, peer=call.peer)
    event.time.FromDatetime(call.time)
    return event


async def list_audit_events(request: vault_pb2.ListAuditEventsRequest,
                            make_uow: Callable[[], VaultUnitOfWork]) -> vault_pb2.ListAuditEventsResponse:
    principal = current_principal()
    found, count = await audit.list_audit_events(
        principal.project_id, principal.roles, make_uow(), project_id=request.project_id, method=request.method,
        resource_id=request.resource_id, subject=request.subject,
        since=request.since.ToDatetime(tzinfo=dt.timezone.utc) if request.HasField("since") else None,
        until=request.until.ToDatetime(tzinfo=dt.timezone.utc) if request.HasField("until") else None,
        outcome=request.outcome, limit=request.page.limit, offset=request.page.offset)
    return vault_pb2.ListAuditEventsResponse(events=[event_out(call) for call in found], count=count)

