"""Reads and writes `replication_jobs`: a replication task's destination, transfer and counters (DESIGN.md 17.9)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_backup.adapters.tables import replication_jobs, tasks
from cbr_common.db import utcnow

COUNTERS = ("chunk_bytes_sent", "present_bytes", "resent_bytes", "metadata_bytes", "chunks_sent", "chunks_present")
OPEN_TASK_STATUSES = ("waiting", "running")


@dataclass
class ReplicationJob:
    task_id: str
    record_id: str
    project_id: str
    source_vault_id: str
    source_backup_id: str
    destination_region: str
    destination_project_id: str
    destination_vault_id: str
    name: str
    description: str = ""
    auto_trigger: bool = False
    policy_id: str = ""
    retention: bytes | None = None
    transfer_id: str = ""
    chunk_bytes_sent: int = 0
    present_bytes: int = 0
    resent_bytes: int = 0
    metadata_bytes: int = 0
    chunks_sent: int = 0
    chunks_present: int = 0
    present_known: bool = False
    sent_through: bytes | None = None
    destination_backup_id: str = ""
    source_manifest_digest: bytes = b""
    replica_manifest_digest: bytes = b""
    rate_limit_mbps: float = 0.0  # the record's pace (MB/s); 0: none
    slot_held: bool = False

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


_NULLABLE_TEXT = ("policy_id", "transfer_id", "destination_backup_id")
_FIELDS = tuple(f.name for f in fields(ReplicationJob))


class ReplicationJobRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, job: ReplicationJob) -> None:
        now = utcnow()
        row = {name: getattr(job, name) for name in _FIELDS}
        row.update({name: row[name] or None for name in _NULLABLE_TEXT})
        await self._s.execute(insert(replication_jobs).values(**row, created_time=now, updated_time=now))

    async def get(self, task_id: str, for_update: bool = False) -> ReplicationJob | None:
        query = select(replication_jobs).where(replication_jobs.c.task_id == task_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else _job(row)

    async def task_of_record(self, record_id: str) -> str | None:
        return (await self._s.execute(select(replication_jobs.c.task_id).where(
            replication_jobs.c.record_id == record_id))).scalar_one_or_none()

    async def open_task_of_backup(self, backup_id: str) -> str | None:
        """A waiting or running replication task of the backup, if any."""
        return (await self._s.execute(
            select(replication_jobs.c.task_id)
            .join(tasks, tasks.c.task_id == replication_jobs.c.task_id)
            .where(replication_jobs.c.source_backup_id == backup_id, tasks.c.status.in_(OPEN_TASK_STATUSES))
            .limit(1))).scalar_one_or_none()

    async def update(self, task_id: str, **values) -> None:
        for name in _NULLABLE_TEXT:
            if name in values:
                values[name] = values[name] or None
        await self._s.execute(update(replication_jobs).where(replication_jobs.c.task_id == task_id)
                              .values(**values, updated_time=utcnow()))


def replication_jobs_of(uow) -> ReplicationJobRepository:
    """The repository on a unit of work's transaction."""
    return ReplicationJobRepository(uow.session)


def _job(row) -> ReplicationJob:
    values = {name: row[name] for name in _FIELDS}
    values.update({name: values[name] or "" for name in _NULLABLE_TEXT})
    values.update(source_manifest_digest=values["source_manifest_digest"] or b"",
                  replica_manifest_digest=values["replica_manifest_digest"] or b"",
                  retention=None if values["retention"] is None else bytes(values["retention"]),
                  sent_through=None if values["sent_through"] is None else bytes(values["sent_through"]))
    return ReplicationJob(**values)
