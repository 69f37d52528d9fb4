"""Reads and writes vaults in the `vault` schema; returns domain objects."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_common.db import utcnow
from cbr_vault.adapters.tables import bind_rules, policies, vault_resources, vault_tags, vaults
from cbr_vault.domain.model import PolicyRef, Tag, Vault, VaultResource


@dataclass(frozen=True)
class VaultFilter:
    project_id: str
    name: str = ""
    object_type: str = ""
    protect_type: str = ""
    status: str = ""
    policy_id: str = ""
    resource_ids: tuple[str, ...] = ()
    vault_ids: tuple[str, ...] = ()


_VAULT_FIELDS = ("name", "description", "object_type", "protect_type", "consistent_level", "size_gb",
                 "used_bytes", "auto_expand", "auto_bind", "smn_notify", "threshold", "locked", "status",
                 "created_time", "updated_time", "used_measured_time", "encrypted")


class VaultRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, vault: Vault) -> None:
        row = {f: getattr(vault, f) for f in _VAULT_FIELDS}
        row.update(vault_id=vault.vault_id, project_id=vault.project_id,
                   backup_policy_id=vault.backup_policy_id or None,
                   replication_policy_id=vault.replication_policy_id or None,
                   replication_destination_vault_id=vault.replication_destination_vault_id or None)
        await self._s.execute(insert(vaults).values(**row))
        await self.add_resources(vault.vault_id, vault.project_id, vault.resources)
        await self.replace_tags(vault.vault_id, vault.tags)
        await self.replace_bind_rules(vault.vault_id, vault.bind_rules)

    async def get(self, project_id: str, vault_id: str, for_update: bool = False) -> Vault | None:
        query = select(vaults).where(vaults.c.vault_id == vault_id, vaults.c.project_id == project_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        if row is None:
            return None
        return (await self._load([row]))[0]

    async def update_fields(self, vault_id: str, **values) -> None:
        values["updated_time"] = utcnow()
        await self._s.execute(update(vaults).where(vaults.c.vault_id == vault_id).values(**values))

    async def record_usage(self, vault_id: str, used_bytes: int, measured_time: dt.datetime) -> None:
        """Usage is measured, not a change of the vault's settings, so updated_time stays."""
        await self._s.execute(update(vaults).where(vaults.c.vault_id == vault_id)
                              .values(used_bytes=used_bytes, used_measured_time=measured_time))

    async def record_resource_backups(self, vault_id: str, measured: dict[str, tuple[int, int]]) -> None:
        """Each resource's (backup count, backup size bytes) as measured with the vault's usage; resources the
        measurement does not name have no backups."""
        r = vault_resources.c
        await self._s.execute(update(vault_resources).where(r.vault_id == vault_id)
                              .values(backup_count=0, backup_size_bytes=0))
        for resource_id, (count, size) in measured.items():
            await self._s.execute(update(vault_resources).where(r.vault_id == vault_id, r.resource_id == resource_id)
                                  .values(backup_count=count, backup_size_bytes=size))

    async def delete(self, vault_id: str) -> None:
        await self._s.execute(delete(vaults).where(vaults.c.vault_id == vault_id))

    # Resources

    async def add_resources(self, vault_id: str, project_id: str, resources: Sequence[VaultResource]) -> None:
        if not resources:
            return
        now = utcnow()
        await self._s.execute(insert(vault_resources), [
            {"resource_id": r.resource_id, "vault_id": vault_id, "project_id": project_id, "type": r.type,
             "name": r.name, "exclude_volumes": list(r.exclude_volumes), "protect_status": r.protect_status,
             "size_bytes": r.size_bytes, "backup_size_bytes": 0, "backup_count": 0, "added_time": now}
            for r in resources])

    async def remove_resources(self, vault_id: str, resource_ids: Sequence[str]) -> None:
        await self._s.execute(delete(vault_resources).where(vault_resources.c.vault_id == vault_id,
                                                            vault_resources.c.resource_id.in_(resource_ids)))

    async def move_resources(self, source_id: str, destination_id: str, resource_ids: Sequence[str]) -> None:
        """Their backups stay in the source vault: in the destination they have none until it measures some."""
        await self._s.execute(update(vault_resources).where(vault_resources.c.vault_id == source_id,
                                                            vault_resources.c.resource_id.in_(resource_ids))
                              .values(vault_id=destination_id, backup_count=0, backup_size_bytes=0))

    async def vaults_holding(self, project_id: str, resource_ids: Sequence[str]) -> dict[str, str]:
        """resource id -> id of the project's vault that holds it, for those held."""
        rows = (await self._s.execute(select(vault_resources.c.resource_id, vault_resources.c.vault_id)
                                      .where(vault_resources.c.project_id == project_id,
                                             vault_resources.c.resource_id.in_(resource_ids)))).all()
        return {r.resource_id: r.vault_id for r in rows}

    # Tags and bind rules

    async def replace_tags(self, vault_id: str, tags: Sequence[Tag]) -> None:
        await self._s.execute(delete(vault_tags).where(vault_tags.c.vault_id == vault_id))
        if tags:
            await self._s.execute(insert(vault_tags), [{"vault_id": vault_id, "key": t.key, "value": t.value}
                                                       for t in tags])

    async def replace_bind_rules(self, vault_id: str, rules: Sequence[Tag]) -> None:
        await self._s.execute(delete(bind_rules).where(bind_rules.c.vault_id == vault_id))
        if rules:
            await self._s.execute(insert(bind_rules), [{"vault_id": vault_id, "key": t.key, "value": t.value}
                                                       for t in rules])

    async def project_tags(self, project_id: str) -> dict[str, list[str]]:
        rows = (await self._s.execute(
            select(vault_tags.c.key, vault_tags.c.value).distinct()
            .join(vaults, vaults.c.vault_id == vault_tags.c.vault_id)
            .where(vaults.c.project_id == project_id).order_by(vault_tags.c.key, vault_tags.c.value))).all()
        result: dict[str, list[str]] = {}
        for row in rows:
            result.setdefault(row.key, []).append(row.value)
        return result

    # Policies (projection of the policy service's events)

    async def get_policy(self, project_id: str, policy_id: str) -> PolicyRef | None:
        row = (await self._s.execute(select(policies).where(policies.c.policy_id == policy_id,
                                                            policies.c.project_id == project_id))).first()
        return None if row is None else PolicyRef(row.policy_id, row.project_id, row.operation_type, row.name,
                                                  row.enabled)

    async def upsert_policy(self, policy: PolicyRef) -> None:
        values = {"policy_id": policy.policy_id, "project_id": policy.project_id,
                  "operation_type": policy.operation_type, "name": policy.name, "enabled": policy.enabled,
                  "updated_time": utcnow()}
        await self._s.execute(pg_insert(policies).values(**values).on_conflict_do_update(
            index_elements=[policies.c.policy_id], set_=values))

    async def forget_policy(self, policy_id: str) -> list[tuple[str, str]]:
        """Drops the policy and clears it from every vault; returns (project_id, vault_id) of those vaults."""
        await self._s.execute(delete(policies).where(policies.c.policy_id == policy_id))
        changed = []
        for column in (vaults.c.backup_policy_id, vaults.c.replication_policy_id):
            rows = (await self._s.execute(
                update(vaults).where(column == policy_id).values({column.name: None, "updated_time": utcnow()})
                .returning(vaults.c.project_id, vaults.c.vault_id))).all()
            changed += [(r.project_id, r.vault_id) for r in rows]
        return changed

    async def _load(self, rows) -> list[Vault]:
        ids = [r["vault_id"] for r in rows]
        if not ids:
            return []
        resources: dict[str, list[VaultResource]] = {i: [] for i in ids}
        for r in (await self._s.execute(select(vault_resources).where(vault_resources.c.vault_id.in_(ids))
                                        .order_by(vault_resources.c.position))
                  ).mappings():
            resources[r["vault_id"]].append(VaultResource(
                resource_id=r["resource_id"], type=r["type"], name=r["name"],
                exclude_volumes=tuple(r["exclude_volumes"]), protect_status=r["protect_status"],
                size_bytes=r["size_bytes"], backup_size_bytes=r["backup_size_bytes"],
                backup_count=r["backup_count"]))
        tags: dict[str, list[Tag]] = {i: [] for i in ids}
        for r in await self._s.execute(select(vault_tags).where(vault_tags.c.vault_id.in_(ids))
                                       .order_by(vault_tags.c.key)):
            tags[r.vault_id].append(Tag(r.key, r.value))
        rules: dict[str, list[Tag]] = {i: [] for i in ids}
        for r in await self._s.execute(select(bind_rules).where(bind_rules.c.vault_id.in_(ids))
                                       .order_by(bind_rules.c.key, bind_rules.c.value)):
            rules[r.vault_id].append(Tag(r.key, r.value))
        return [Vault(vault_id=r["vault_id"], project_id=r["project_id"],
                      backup_policy_id=r["backup_policy_id"] or "",
                      replication_policy_id=r["replication_policy_id"] or "",
                      replication_destination_vault_id=r["replication_destination_vault_id"] or "",
                      resources=resources[r["vault_id"]], tags=tags[r["vault_id"]],
                      bind_rules=rules[r["vault_id"]], **{f: r[f] for f in _VAULT_FIELDS})
                for r in rows]
