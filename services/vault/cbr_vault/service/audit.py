"""The audit trail's keeping side: records arrive as cbr.audit.recorded events from every service (cbr_common.audit
writes them to each service's outbox); ListAuditEvents reads them, within what the caller may see."""
from __future__ import annotations

import datetime as dt
import uuid

from cbr.events.v1 import audit_events_pb2
from cbr_common.jetstream import Subscription
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.domain import audit, rules
from cbr_vault.domain.audit import AuditedCall, AuditQuery

CONSUMER = "vault-audit"  # a consumer of its own: its inbox rows tell the trail's deliveries from the rest


def call_of(event: audit_events_pb2.AuditRecorded) -> AuditedCall:
    stamp = event.call_time if event.HasField("call_time") else event.occurred_time
    return AuditedCall(
        event_id=event.event_id, time=stamp.ToDatetime(tzinfo=dt.timezone.utc), project_id=event.project_id,
        subject=event.subject, roles=tuple(event.roles), service=event.service, method=event.method,
        ids=tuple((i.name, i.value) for i in event.ids), request_id=event.request_id, code=event.code or "OK",
        message=event.message, cbr_code=event.cbr_code, duration_ms=max(event.duration_ms, 0), peer=event.peer)


async def on_audit_recorded(event: audit_events_pb2.AuditRecorded, uow: VaultUnitOfWork) -> None:
    try:
        uuid.UUID(event.event_id)
    except ValueError:
        return  # not one cbr_common.audit wrote (its ids are UUIDs): nothing to key it by
    await uow.audit.add(call_of(event))


async def list_audit_events(caller_project: str, caller_roles: frozenset[str], uow: VaultUnitOfWork, *,
                            project_id: str = "", method: str = "", resource_id: str = "", subject: str = "",
                            since: dt.datetime | None = None, until: dt.datetime | None = None, outcome: str = "",
                            limit: int = 0, offset: int = 0) -> tuple[list[AuditedCall], int]:
    """Checks every filter first (INVALID_ARGUMENT), then who may see which project (PERMISSION_DENIED)."""
    service_name, method_name = audit.parse_method(method)
    code, errors_only = audit.parse_outcome(outcome)
    audit.check_range(since, until)
    limit, offset = rules.check_page(limit, offset)
    resource_id = audit.check_text_filter(resource_id.strip(), "resource_id")
    subject = audit.check_text_filter(subject, "subject")
    visible = audit.visible_project(caller_project, caller_roles, audit.check_text_filter(project_id, "project_id"))
    query = AuditQuery(project_id=visible, service=service_name, method=method_name, resource_id=resource_id,
                       subject=subject, since=since, until=until, code=code, errors_only=errors_only, limit=limit,
                       offset=offset)
    async with uow:
        return await uow.audit.list(query)


SUBSCRIPTIONS = [Subscription(audit_events_pb2.AuditRecorded, on_audit_recorded)]
