"""The vault service's unit of work: one transaction, its repository, and its outbox."""
from __future__ import annotations

import contextlib
from typing import AsyncIterator

from cbr_common.db import Database, UnitOfWork
from cbr_vault.adapters.audit_log import AuditLog
from cbr_vault.adapters.reads import VaultReads
from cbr_vault.adapters.repository import VaultRepository
from cbr_vault.adapters.tables import metadata


class VaultUnitOfWork(UnitOfWork):
    vaults: VaultRepository
    audit: AuditLog

    def __init__(self, db: Database):
        super().__init__(db, metadata)

    async def __aenter__(self) -> "VaultUnitOfWork":
        await super().__aenter__()
        self.vaults = VaultRepository(self.session)
        self.audit = AuditLog(self.session)
        return self

    @contextlib.asynccontextmanager
    async def reads(self) -> AsyncIterator[VaultReads]:
        """The hot reads, outside any transaction (cbr_vault.adapters.reads); not inside `async with uow`."""
        async with self._db.reads() as connection:
            yield VaultReads(connection)
