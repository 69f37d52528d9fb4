"""ListTicks: what the scheduler ran, skipped and failed, newest first."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import and_, func, select

from cbr_common import request_checks
from cbr_policy.adapters.schedule_tables import ticks
from cbr_policy.domain import errors


@dataclass(frozen=True)
class Tick:
    tick_id: str
    policy_id: str
    vault_id: str
    scheduled_time: dt.datetime
    status: str
    reason: str
    checkpoint_id: str
    fired_time: dt.datetime | None


async def list_ticks(project_id: str, policy_id: str, vault_id: str, start: dt.datetime | None,
                     end: dt.datetime | None, limit: int, offset: int, make_uow: Callable) -> tuple[list[Tick], int]:
    limit, offset = request_checks.page_bounds(limit, offset, errors.InvalidPagingError)
    where = [ticks.c.project_id == project_id]
    if policy_id:
        where.append(ticks.c.policy_id == request_checks.canonical_id(policy_id, "policy_id", errors.InvalidIdError))
    if vault_id:
        where.append(ticks.c.vault_id == request_checks.canonical_id(vault_id, "vault_id", errors.InvalidIdError))
    if start is not None and end is not None and end <= start:
        raise errors.InvalidTimeRangeError("end_time must be after start_time")
    if start is not None:
        where.append(ticks.c.scheduled_time >= start)
    if end is not None:
        where.append(ticks.c.scheduled_time < end)
    async with make_uow() as uow:
        count = (await uow.session.execute(select(func.count()).select_from(ticks).where(and_(*where)))).scalar_one()
        rows = (await uow.session.execute(select(ticks).where(and_(*where))
                                          .order_by(ticks.c.scheduled_time.desc(), ticks.c.vault_id)
                                          .limit(limit).offset(offset))).mappings().all()
    return [Tick(r["tick_id"], r["policy_id"], r["vault_id"], r["scheduled_time"], r["status"], r["reason"],
                 r["checkpoint_id"] or "", r["fired_time"]) for r in rows], count
