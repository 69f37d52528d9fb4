"""The policy service's unit of work: one transaction, its repository, and its outbox."""
from __future__ import annotations

from cbr_common.db import Database, UnitOfWork
from cbr_policy.adapters.repository import PolicyRepository
from cbr_policy.adapters.tables import metadata


class PolicyUnitOfWork(UnitOfWork):
    policies: PolicyRepository

    def __init__(self, db: Database):
        super().__init__(db, metadata)

    async def __aenter__(self) -> "PolicyUnitOfWork":
        await super().__aenter__()
        self.policies = PolicyRepository(self.session)
        return self
