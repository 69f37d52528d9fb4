"""GetReplicationRecord, ListReplicationRecords and GetReplicationLag, within the caller's project."""
from __future__ import annotations

from cbr_common.db import utcnow
from cbr_replication.adapters.repository import RecordFilter
from cbr_replication.adapters.unit_of_work import ReplicationUnitOfWork
from cbr_replication.domain import errors, rules
from cbr_replication.domain import lag as lags
from cbr_replication.domain.lag import Lag
from cbr_replication.domain.model import ReplicationRecord
from cbr_replication.service.replicate import Peers


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


async def replication_lag(project_id: str, vault_id: str, destination_region: str, uow: ReplicationUnitOfWork,
                          peers: Peers) -> list[Lag]:
    """The vault's resources' lag in `destination_region`, or in every region its records name."""
    rules.check_id(vault_id, "vault_id")
    if destination_region:
        rules.check_region(destination_region, peers.regions.local, peers.regions.destinations)
    backups = [b for b in await peers.backups.replicable_backups(project_id, vault_id)
               if not b.corrupt and not b.parent_id]
    async with uow:
        found = await uow.records.of_source_vault(project_id, vault_id)
    regions = [destination_region] if destination_region else {r.destination.region for r in found}
    return lags.replication_lag(backups, found, regions, utcnow())
