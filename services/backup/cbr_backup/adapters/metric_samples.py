"""The backup service's sampled gauges (cbr_common/metrics.py): the job queue, and each resource's newest backup."""
from __future__ import annotations

from sqlalchemy import func, select

from cbr_backup.adapters.tables import backups, tasks
from cbr_common import metrics
from cbr_common.metrics import Sampler

OPEN = ("waiting", "running")  # the statuses the partial index ix_tasks_open holds


def job_sampler(db) -> Sampler:
    async def sample() -> None:
        async with db.sessions() as session:
            rows = (await session.execute(
                select(tasks.c.operation_type, tasks.c.status, func.count(),
                       func.extract("epoch", func.now() - func.min(tasks.c.created_time)))
                .where(tasks.c.status.in_(OPEN)).group_by(tasks.c.operation_type, tasks.c.status))).all()
            newest = (await session.execute(
                select(backups.c.vault_id, backups.c.resource_id, func.max(backups.c.resource_name),
                       func.extract("epoch", func.max(backups.c.created_time)))
                .where(backups.c.status == "available", backups.c.parent_id.is_(None),
                       backups.c.namespace_id.is_(None))  # a replica is the source region's backup, not ours
                .group_by(backups.c.vault_id, backups.c.resource_id))).all()
        metrics.QUEUE_DEPTH.replace({(kind,): count for kind, status, count, _ in rows if status == "waiting"})
        metrics.QUEUE_AGE.replace({(kind,): float(age) for kind, status, _, age in rows if status == "waiting"})
        metrics.JOBS_RUNNING.replace({(kind,): count for kind, status, count, _ in rows if status == "running"})
        metrics.LAST_BACKUP.replace({(vault, resource, name or ""): float(at) for vault, resource, name, at in newest})
    return sample
