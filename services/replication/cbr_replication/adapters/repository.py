"""Reads and writes replication records and checkpoint requests in the `replication` schema."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_replication.adapters.tables import checkpoint_requests, records
from cbr_replication.domain.model import Counters, Destination, ReplicationRecord

COUNTER_FIELDS = tuple(f.name for f in dataclasses.fields(Counters))
# What a task update may change; the rest of a record is fixed when it is made.
MUTABLE = ("status", "task_id", "attempt", "progress", "bytes_done", "bytes_total", "destination_backup_id",
           "source_manifest_digest", "replica_manifest_digest", "error_code", "error_message", "started_time",
           "ended_time", "updated_time")


@dataclass(frozen=True)
class RecordFilter:
    project_id: str
    source_vault_id: str = ""
    source_backup_id: str = ""
    destination_vault_id: str = ""
    destination_backup_id: str = ""
    status: str = ""


@dataclass(frozen=True)
class CheckpointRequest:
    project_id: str
    request_id: str
    vault_id: str
    destination: Destination
    auto_trigger: bool
    policy_id: str


def _row(record: ReplicationRecord) -> dict:
    row = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
           if f.name not in ("destination", "counters")}
    row.update(destination_region=record.destination.region, destination_project_id=record.destination.project_id,
               destination_vault_id=record.destination.vault_id, retention=record.retention or None)
    row.update(dataclasses.asdict(record.counters))
    return row


def _record(row) -> ReplicationRecord:
    fields = {f.name for f in dataclasses.fields(ReplicationRecord)} - {"destination", "counters"}
    values = {name: row[name] for name in fields}
    values["retention"] = bytes(row["retention"] or b"")
    values["source_manifest_digest"] = bytes(row["source_manifest_digest"])
    values["replica_manifest_digest"] = bytes(row["replica_manifest_digest"])
    return ReplicationRecord(
        **values, destination=Destination(row["destination_region"], row["destination_project_id"],
                                          row["destination_vault_id"]),
        counters=Counters(**{name: row[name] for name in COUNTER_FIELDS}))


class RecordRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, record: ReplicationRecord) -> None:
        await self._s.execute(insert(records).values(**_row(record)))

    async def get(self, replication_record_id: str, for_update: bool = False) -> ReplicationRecord | None:
        query = select(records).where(records.c.replication_record_id == replication_record_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else _record(row)

    async def save(self, record: ReplicationRecord) -> None:
        """Writes what a task update may change."""
        row = _row(record)
        await self._s.execute(update(records).where(records.c.replication_record_id == record.replication_record_id)
                              .values(**{name: row[name] for name in MUTABLE + COUNTER_FIELDS}))

    async def by_request(self, project_id: str, request_id: str) -> ReplicationRecord | None:
        row = (await self._s.execute(select(records).where(
            records.c.project_id == project_id, records.c.request_id == request_id))).mappings().first()
        return None if row is None else _record(row)

    async def for_backup(self, project_id: str, source_backup_id: str,
                         destination: Destination) -> list[ReplicationRecord]:
        """The backup's records for one destination vault, newest first."""
        rows = (await self._s.execute(select(records).where(
            records.c.project_id == project_id, records.c.source_backup_id == source_backup_id,
            records.c.destination_region == destination.region,
            records.c.destination_vault_id == destination.vault_id)
            .order_by(records.c.created_time.desc()))).mappings().all()
        return [_record(r) for r in rows]

    async def for_vault(self, project_id: str, source_vault_id: str,
                        destination: Destination) -> list[ReplicationRecord]:
        rows = (await self._s.execute(select(records).where(
            records.c.project_id == project_id, records.c.source_vault_id == source_vault_id,
            records.c.destination_region == destination.region,
            records.c.destination_vault_id == destination.vault_id)
            .order_by(records.c.created_time.desc()))).mappings().all()
        return [_record(r) for r in rows]

    async def of_source_vault(self, project_id: str, source_vault_id: str) -> list[ReplicationRecord]:
        """Every record of the vault's backups, whatever their destination."""
        rows = (await self._s.execute(select(records).where(
            records.c.project_id == project_id, records.c.source_vault_id == source_vault_id))).mappings().all()
        return [_record(r) for r in rows]

    async def by_checkpoint_request(self, project_id: str, request_id: str) -> list[ReplicationRecord]:
        rows = (await self._s.execute(select(records).where(
            records.c.project_id == project_id, records.c.checkpoint_request_id == request_id)
            .order_by(records.c.created_time, records.c.source_backup_id))).mappings().all()
        return [_record(r) for r in rows]

    async def list(self, flt: RecordFilter, limit: int, offset: int) -> tuple[list[ReplicationRecord], int]:
        c = records.c
        where = [c.project_id == flt.project_id]
        for column, value in ((c.source_vault_id, flt.source_vault_id), (c.source_backup_id, flt.source_backup_id),
                              (c.destination_vault_id, flt.destination_vault_id),
                              (c.destination_backup_id, flt.destination_backup_id), (c.status, flt.status)):
            if value:
                where.append(column == value)
        count = (await self._s.execute(select(func.count()).select_from(records).where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(select(records).where(and_(*where))
                                      .order_by(c.created_time.desc(), c.replication_record_id)
                                      .limit(limit).offset(offset))).mappings().all()
        return [_record(r) for r in rows], count

    async def checkpoint_request(self, project_id: str, request_id: str) -> CheckpointRequest | None:
        row = (await self._s.execute(select(checkpoint_requests).where(
            checkpoint_requests.c.project_id == project_id,
            checkpoint_requests.c.request_id == request_id))).mappings().first()
        if row is None:
            return None
        return CheckpointRequest(row["project_id"], row["request_id"], row["vault_id"],
                                 Destination(row["destination_region"], row["destination_project_id"],
                                             row["destination_vault_id"]), row["auto_trigger"], row["policy_id"])

    async def add_checkpoint_request(self, req: CheckpointRequest, now) -> None:
        await self._s.execute(insert(checkpoint_requests).values(
            project_id=req.project_id, request_id=req.request_id, vault_id=req.vault_id,
            destination_region=req.destination.region, destination_project_id=req.destination.project_id,
            destination_vault_id=req.destination.vault_id, auto_trigger=req.auto_trigger, policy_id=req.policy_id,
            created_time=now))
