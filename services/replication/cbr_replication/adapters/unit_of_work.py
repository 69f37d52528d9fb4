"""The replication service's unit of work: one transaction, its repository, and its outbox."""
from __future__ import annotations

from cbr_common.db import Database, UnitOfWork
from cbr_replication.adapters.repository import RecordRepository
from cbr_replication.adapters.tables import metadata


class ReplicationUnitOfWork(UnitOfWork):
    records: RecordRepository

    def __init__(self, db: Database):
        super().__init__(db, metadata)

    async def __aenter__(self) -> "ReplicationUnitOfWork":
        await super().__aenter__()
        self.records = RecordRepository(self.session)
        return self
