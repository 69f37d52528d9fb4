"""Reads and writes the audit trail (`vault.audit_events`)."""
from __future__ import annotations

from sqlalchemy import and_, func, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_common.db import utcnow
from cbr_vault.adapters.tables import audit_events as t
from cbr_vault.domain.audit import AuditedCall, AuditQuery


class AuditLog:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, call: AuditedCall) -> None:
        """Once per event id: a record delivered twice (a relay that published again) stays one row."""
        await self._s.execute(pg_insert(t).values(
            event_id=call.event_id, time=call.time, project_id=call.project_id, subject=call.subject,
            roles=list(call.roles), service=call.service, method=call.method, ids=[list(pair) for pair in call.ids],
            id_values=sorted({value for _, value in call.ids}), request_id=call.request_id, code=call.code,
            message=call.message, cbr_code=call.cbr_code, duration_ms=call.duration_ms, peer=call.peer,
            recorded_time=utcnow()).on_conflict_do_nothing(index_elements=["event_id"]))

    async def list(self, query: AuditQuery) -> tuple[list[AuditedCall], int]:
        """Newest first; the count ignores paging."""
        where = []
        for column, value in ((t.c.project_id, query.project_id), (t.c.service, query.service),
                              (t.c.method, query.method), (t.c.subject, query.subject), (t.c.code, query.code)):
            if value:
                where.append(column == value)
        if query.resource_id:
            where.append(t.c.id_values.contains([query.resource_id]))
        if query.since is not None:
            where.append(t.c.time >= query.since)
        if query.until is not None:
            where.append(t.c.time < query.until)
        if query.errors_only:
            where.append(t.c.code != "OK")
        condition = and_(true(), *where)
        count = (await self._s.execute(select(func.count()).select_from(t).where(condition))).scalar_one()
        rows = (await self._s.execute(select(t).where(condition).order_by(t.c.time.desc(), t.c.event_id.desc())
                                      .limit(query.limit).offset(query.offset))).mappings().all()
        return [_call(row) for row in rows], count


def _call(row) -> AuditedCall:
    return AuditedCall(
        event_id=row["event_id"], time=row["time"], project_id=row["project_id"], subject=row["subject"],
        roles=tuple(row["roles"]), service=row["service"], method=row["method"],
        ids=tuple((name, value) for name, value in row["ids"]), request_id=row["request_id"], code=row["code"],
        message=row["message"], cbr_code=row["cbr_code"], duration_ms=row["duration_ms"], peer=row["peer"])
