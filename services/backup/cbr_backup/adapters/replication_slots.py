"""The slots of a destination region (DESIGN.md 17.11): a replication job holds one while it sends, marked on its
replication_jobs row. A mark counts only while its task runs with a live lease, so a killed worker's slot frees
when its lease ends, with nothing to clean up."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import cast, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB

from cbr_backup.adapters.tables import replication_jobs, tasks
from cbr_backup.domain.replication_pace import slot_free
from cbr_common.db import utcnow


async def live_holders(session, destination: str, lease_seconds: float, exclude: str = "") -> int:
    """Jobs holding a slot to `destination` whose task is running and beat within its lease."""
    since = utcnow() - dt.timedelta(seconds=lease_seconds)
    query = (select(func.count()).select_from(replication_jobs)
             .join(tasks, tasks.c.task_id == replication_jobs.c.task_id)
             .where(replication_jobs.c.destination_region == destination, replication_jobs.c.slot_held,
                    tasks.c.status == "running", tasks.c.heartbeat_time >= since))
    if exclude:
        query = query.where(replication_jobs.c.task_id != exclude)
    return (await session.execute(query)).scalar_one()


async def take_slot(session, task_id: str, destination: str, max_concurrent: int,
                    lease_seconds: float) -> tuple[bool, int]:
    """(taken, holders besides this job). The count and the mark happen under a transaction-scoped advisory lock
    per destination, so two workers never both take the last slot; the caller commits."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                          {"key": f"cbr.replication.slots:{destination}"})
    others = await live_holders(session, destination, lease_seconds, exclude=task_id)
    if not slot_free(others, max_concurrent):
        return False, others
    await session.execute(update(replication_jobs).where(replication_jobs.c.task_id == task_id)
                          .values(slot_held=True, updated_time=utcnow()))
    return True, others


async def release_slot(session, task_id: str) -> None:
    await session.execute(update(replication_jobs).where(replication_jobs.c.task_id == task_id)
                          .values(slot_held=False, updated_time=utcnow()))


async def note_on_task(session, task_id: str, add: dict[str, str], drop: str = "") -> None:
    """Merges `add` into the task's extra_info (and drops a key) in place: a cancel_requested written meanwhile
    stays."""
    value = tasks.c.extra_info.op("||")(cast(literal(add, JSONB), JSONB))
    if drop:
        value = value.op("-")(drop)
    await session.execute(update(tasks).where(tasks.c.task_id == task_id).values(extra_info=value,
                                                                                 updated_time=utcnow()))
