"""The lag check's rows in the `replication` schema: the vaults it watches and the crossings it published."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, tuple_, union
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_replication.adapters.tables import lag_watches, lagging, records
from cbr_replication.domain.lag import Lag
from cbr_replication.domain.lag_alerts import LagKey

VaultKey = tuple[str, str]  # (project_id, source_vault_id)


class LagState:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def watch(self, project_id: str, vault_id: str, region: str, policy_id: str, now: dt.datetime) -> None:
        values = dict(policy_id=policy_id, seen_time=now)
        await self._s.execute(pg_insert(lag_watches).values(
            project_id=project_id, source_vault_id=vault_id, destination_region=region, **values)
            .on_conflict_do_update(index_elements=list(lag_watches.primary_key.columns), set_=values))

    async def watched(self) -> dict[VaultKey, set[str]]:
        """Every watched vault and its destination regions: the ticks' and the records'."""
        rows = (await self._s.execute(union(
            select(lag_watches.c.project_id, lag_watches.c.source_vault_id, lag_watches.c.destination_region),
            select(records.c.project_id, records.c.source_vault_id, records.c.destination_region).distinct()))).all()
        found: dict[VaultKey, set[str]] = {}
        for project_id, vault_id, region in rows:
            found.setdefault((project_id, vault_id), set()).add(region)
        return found

    async def lagging(self, project_id: str, vault_id: str) -> set[LagKey]:
        """The vault's published, unrecovered crossings, locked until the check of this vault commits."""
        rows = (await self._s.execute(select(lagging.c.resource_id, lagging.c.destination_region).where(
            lagging.c.project_id == project_id, lagging.c.source_vault_id == vault_id).with_for_update())).all()
        return {(r.resource_id, r.destination_region) for r in rows}

    async def add_lagging(self, project_id: str, vault_id: str, lag: Lag, now: dt.datetime) -> bool:
        """False when a concurrent check published this crossing first."""
        result = await self._s.execute(pg_insert(lagging).values(
            project_id=project_id, source_vault_id=vault_id, resource_id=lag.resource_id,
            destination_region=lag.destination_region, crossed_time=now,
            oldest_unreplicated_backup_id=lag.oldest_unreplicated.backup_id).on_conflict_do_nothing()
            .returning(lagging.c.resource_id))
        return result.first() is not None

    async def recover(self, project_id: str, vault_id: str, keys: set[LagKey]) -> None:
        if keys:
            await self._s.execute(delete(lagging).where(
                lagging.c.project_id == project_id, lagging.c.source_vault_id == vault_id,
                tuple_(lagging.c.resource_id, lagging.c.destination_region).in_(sorted(keys))))
