"""Policies and bindings written straight into a policy schema, for the scheduler and retention tests that run
on their own database with a hand-moved clock (the services' own scheduler must not see them)."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import delete, select

from cbr_policy.adapters.schedule_tables import schedules, ticks
from cbr_policy.adapters.tables import bindings, policies

T0 = dt.datetime(2026, 3, 2, 10, 0, 30, tzinfo=dt.timezone.utc)  # a Monday
HOURLY = [f"FREQ=DAILY;INTERVAL=1;BYHOUR={','.join(str(h) for h in range(24))};BYMINUTE=0"]


async def add_policy(make_uow, vaults: int, patterns=HOURLY, enabled=True, **definition) -> tuple[str, list[str]]:
    policy_id, project = str(uuid.uuid4()), f"p-{uuid.uuid4().hex[:8]}"
    vault_ids = [str(uuid.uuid4()) for _ in range(vaults)]
    async with make_uow() as uow:
        await uow.session.execute(policies.insert().values(
            policy_id=policy_id, project_id=project, name="hourly", operation_type="backup", enabled=enabled,
            trigger={"patterns": patterns, "start_time": "2026-01-01T00:00:00+00:00"},
            operation_definition={"max_backups": -1, "retention_duration_days": -1, **definition},
            created_time=T0, updated_time=T0))
        for vault_id in vault_ids:
            await uow.session.execute(bindings.insert().values(
                vault_id=vault_id, operation_type="backup", policy_id=policy_id, destination_vault_id="",
                project_id=project, bound_time=T0))
        await uow.commit()
    return policy_id, vault_ids


async def ticks_of(make_uow, policy_id: str) -> list[dict]:
    async with make_uow() as uow:
        rows = (await uow.session.execute(select(ticks).where(ticks.c.policy_id == policy_id)
                                          .order_by(ticks.c.scheduled_time, ticks.c.vault_id))).mappings().all()
    return [dict(r) for r in rows]


async def drop_policy(make_uow, policy_id: str) -> None:
    async with make_uow() as uow:
        await uow.session.execute(delete(policies).where(policies.c.policy_id == policy_id))
        await uow.session.execute(delete(schedules).where(schedules.c.policy_id == policy_id))
        await uow.commit()
