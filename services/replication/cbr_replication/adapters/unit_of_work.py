"""The replication service's unit of work: one transaction, its repositories, and its outbox."""
from __future__ import annotations

from cbr_common.db import Database, UnitOfWork
from cbr_replication.adapters.lag_state import LagState
from cbr_replication.adapters.repository import RecordRepository
from cbr_replication.adapters.tables import metadata


class ReplicationUnitOfWork(UnitOfWork):
    records: RecordRepository
    lag: LagState

    def __init__(self, db: Database):
        super().__init__(db, metadata)

    async def __aenter__(self) -> "ReplicationUnitOfWork":
        await super().__aenter__()
        self.records = RecordRepository(self.session)
        self.lag = LagState(self.session)
        return self
