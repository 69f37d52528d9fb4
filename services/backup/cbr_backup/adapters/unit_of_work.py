"""The backup service's unit of work: one transaction, its repositories, and its outbox."""
from __future__ import annotations

from cbr_backup.adapters.backup_repository import BackupRepository
from cbr_backup.adapters.repository import InventoryRepository, TaskRepository
from cbr_backup.adapters.tables import metadata
from cbr_common.db import Database, UnitOfWork


class BackupUnitOfWork(UnitOfWork):
    inventory: InventoryRepository
    tasks: TaskRepository
    backups: BackupRepository

    def __init__(self, db: Database, statement_seconds: float | None = None):
        super().__init__(db, metadata, statement_seconds)

    async def __aenter__(self) -> "BackupUnitOfWork":
        await super().__aenter__()
        self.inventory = InventoryRepository(self.session)
        self.tasks = TaskRepository(self.session)
        self.backups = BackupRepository(self.session)
        return self
