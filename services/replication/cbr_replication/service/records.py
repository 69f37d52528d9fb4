"""GetReplicationRecord and ListReplicationRecords, within the caller's project."""
from __future__ import annotations

from cbr_replication.adapters.repository import RecordFilter
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.domain import errors, rules
from cbr_replication.domain.model import ReplicationRecord


async def get_record(project_id: str, replication_record_id: str, uow: ReplicationUnitOfWork) -> ReplicationRecord:
    rules.check_id(replication_record_id, "replication_record_id")
    async with uow:
        record = await uow.records.get(replication_record_id)
    if record is None or record.project_id != project_id:
        raise errors.RecordNotFoundError(f"replication record {replication_record_id} not found")
    return record


async def list_records(flt: RecordFilter, limit: int, offset: int,
                       uow: ReplicationUnitOfWork) -> tuple[list[ReplicationRecord], int]:
    """Newest first; the count ignores paging."""
    limit, offset = rules.check_page(limit, offset)
    for what in ("source_vault_id", "source_backup_id", "destination_vault_id", "destination_backup_id"):
        rules.check_optional_id(getattr(flt, what), what)
    rules.check_status_filter(flt.status)
    async with uow:
        return await uow.records.list(flt, limit, offset)
