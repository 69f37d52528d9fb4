"""Reads and writes policies and their vault bindings in the `policy` schema; returns domain objects."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_policy.adapters.tables import binding_versions, bindings, policies
from cbr_policy.domain.model import AssociatedVault, OperationDefinition, Policy, Trigger

# The first key of the two-key advisory lock that serialises policy creation in one project (the second is
# the project id's hash). The two-key space never meets the one-key locks other services take.
QUOTA_LOCK_CLASS = 0x0CB2_6001

_DEFINITION_FIELDS = tuple(f.name for f in dataclasses.fields(OperationDefinition))


@dataclass(frozen=True)
class PolicyFilter:
    project_id: str
    operation_type: str = ""
    vault_id: str = ""


def trigger_json(trigger: Trigger) -> dict:
    return {"patterns": list(trigger.patterns),
            "start_time": trigger.start_time.astimezone(dt.timezone.utc).isoformat() if trigger.start_time else None}


def trigger_of(data: dict) -> Trigger:
    start = data.get("start_time")
    return Trigger(patterns=tuple(data.get("patterns", ())),
                   start_time=dt.datetime.fromisoformat(start) if start else None)


def definition_json(definition: OperationDefinition) -> dict:
    return dataclasses.asdict(definition)


def definition_of(data: dict) -> OperationDefinition:
    return OperationDefinition(**{k: v for k, v in data.items() if k in _DEFINITION_FIELDS})


class PolicyRepository:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def add(self, policy: Policy) -> None:
        await self._s.execute(insert(policies).values(**self._row(policy)))

    async def get(self, project_id: str, policy_id: str, for_update: bool = False) -> Policy | None:
        query = select(policies).where(policies.c.policy_id == policy_id, policies.c.project_id == project_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._s.execute(query)).mappings().first()
        return None if row is None else (await self._load([row]))[0]

    async def list(self, flt: PolicyFilter, limit: int, offset: int) -> tuple[list[Policy], int]:
        where = [policies.c.project_id == flt.project_id]
        if flt.operation_type:
            where.append(policies.c.operation_type == flt.operation_type)
        if flt.vault_id:
            where.append(exists().where(bindings.c.policy_id == policies.c.policy_id,
                                        bindings.c.vault_id == flt.vault_id))
        count = (await self._s.execute(select(func.count()).select_from(policies).where(and_(*where)))).scalar_one()
        rows = (await self._s.execute(
            select(policies).where(and_(*where)).order_by(policies.c.created_time.desc(), policies.c.policy_id)
            .limit(limit).offset(offset))).mappings().all()
        return await self._load(rows), count

    async def replace(self, policy: Policy) -> None:
        """Writes every field of an existing policy."""
        row = self._row(policy)
        del row["policy_id"], row["project_id"], row["created_time"]
        await self._s.execute(update(policies).where(policies.c.policy_id == policy.policy_id).values(**row))

    async def delete(self, policy_id: str) -> None:
        """Its bindings go with it (ON DELETE CASCADE)."""
        await self._s.execute(delete(policies).where(policies.c.policy_id == policy_id))

    async def lock_project_quota(self, project_id: str) -> None:
        """Serialises policy creation in the project until the transaction ends, so that counting and inserting
        cannot race past the per-type limit."""
        await self._s.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), hashtext(:project))"),
                              {"cls": QUOTA_LOCK_CLASS, "project": project_id})

    async def count(self, project_id: str, operation_type: str) -> int:
        return (await self._s.execute(select(func.count()).select_from(policies).where(
            policies.c.project_id == project_id, policies.c.operation_type == operation_type))).scalar_one()

    # Bindings (projection of the vault service's events)

    async def claim_binding_change(self, vault_id: str, operation_type: str, changed_time: dt.datetime) -> bool:
        """Records that the vault's slot changed at `changed_time`; False (and nothing recorded) when a change
        at that time or later was applied already, so a late or replayed event cannot undo a newer one."""
        stmt = pg_insert(binding_versions).values(vault_id=vault_id, operation_type=operation_type,
                                                  changed_time=changed_time)
        stmt = stmt.on_conflict_do_update(
            index_elements=[binding_versions.c.vault_id, binding_versions.c.operation_type],
            set_={"changed_time": stmt.excluded.changed_time},
            where=binding_versions.c.changed_time < stmt.excluded.changed_time)
        return (await self._s.execute(stmt.returning(binding_versions.c.vault_id))).first() is not None

    async def bind(self, project_id: str, vault_id: str, operation_type: str, policy_id: str,
                   destination_vault_id: str, bound_time: dt.datetime) -> None:
        values = {"vault_id": vault_id, "operation_type": operation_type, "policy_id": policy_id,
                  "destination_vault_id": destination_vault_id, "project_id": project_id, "bound_time": bound_time}
        stmt = pg_insert(bindings).values(**values)
        await self._s.execute(stmt.on_conflict_do_update(
            index_elements=[bindings.c.vault_id, bindings.c.operation_type], set_=values))

    async def unbind(self, project_id: str, vault_id: str, operation_type: str, policy_id: str) -> None:
        await self._s.execute(delete(bindings).where(bindings.c.project_id == project_id,
                                                     bindings.c.vault_id == vault_id,
                                                     bindings.c.operation_type == operation_type,
                                                     bindings.c.policy_id == policy_id))

    async def unbind_vault(self, project_id: str, vault_id: str) -> None:
        await self._s.execute(delete(bindings).where(bindings.c.project_id == project_id,
                                                     bindings.c.vault_id == vault_id))

    # Rows <-> domain objects

    @staticmethod
    def _row(policy: Policy) -> dict:
        return {"policy_id": policy.policy_id, "project_id": policy.project_id, "name": policy.name,
                "operation_type": policy.operation_type, "enabled": policy.enabled,
                "trigger": trigger_json(policy.trigger),
                "operation_definition": definition_json(policy.operation_definition),
                "created_time": policy.created_time, "updated_time": policy.updated_time}

    async def _load(self, rows) -> list[Policy]:
        ids = [r["policy_id"] for r in rows]
        if not ids:
            return []
        vaults: dict[str, list[AssociatedVault]] = {i: [] for i in ids}
        for b in (await self._s.execute(select(bindings).where(bindings.c.policy_id.in_(ids))
                                        .order_by(bindings.c.bound_time, bindings.c.vault_id))).mappings():
            vaults[b["policy_id"]].append(AssociatedVault(vault_id=b["vault_id"],
                                                          destination_vault_id=b["destination_vault_id"],
                                                          bound_time=b["bound_time"]))
        return [Policy(policy_id=r["policy_id"], project_id=r["project_id"], name=r["name"],
                       operation_type=r["operation_type"], enabled=r["enabled"], trigger=trigger_of(r["trigger"]),
                       operation_definition=definition_of(r["operation_definition"]),
                       created_time=r["created_time"], updated_time=r["updated_time"],
                       associated_vaults=vaults[r["policy_id"]])
                for r in rows]
