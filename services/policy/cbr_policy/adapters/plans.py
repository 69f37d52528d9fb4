"""Policies as the scheduler and retention use them: parsed schedule and rule, and the vaults bound to them."""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cbr_policy.adapters.repository import definition_of
from cbr_policy.adapters.tables import bindings, policies
from cbr_policy.domain.retention import RetentionRule
from cbr_policy.domain.schedule import Schedule, parse_schedule


@dataclass(frozen=True)
class PolicyPlan:
    policy_id: str
    project_id: str
    operation_type: str
    enabled: bool
    updated_time: dt.datetime
    schedule: Schedule
    rule: RetentionRule
    retention_duration_days: int = -1
    full_backup_interval: int = -1
    destination_region: str = ""
    destination_project_id: str = ""
    vault_ids: frozenset[str] = frozenset()
    destination_vault_ids: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def _schedule(policy_id: str, version: dt.datetime, patterns: tuple[str, ...], timezone: str,
              start: str | None) -> Schedule:
    """Parsed once per policy version (the scheduler asks for every due vault's policy each pass)."""
    return parse_schedule(patterns, timezone, dt.datetime.fromisoformat(start) if start else None)


def plan_of(row, bound: list) -> PolicyPlan:
    definition, trigger = definition_of(row["operation_definition"]), row["trigger"]
    return PolicyPlan(
        policy_id=row["policy_id"], project_id=row["project_id"], operation_type=row["operation_type"],
        enabled=row["enabled"], updated_time=row["updated_time"],
        schedule=_schedule(row["policy_id"], row["updated_time"], tuple(trigger.get("patterns", ())),
                           definition.timezone, trigger.get("start_time")),
        rule=definition.retention_rule(), retention_duration_days=definition.retention_duration_days,
        full_backup_interval=definition.full_backup_interval, destination_region=definition.destination_region,
        destination_project_id=definition.destination_project_id,
        vault_ids=frozenset(b["vault_id"] for b in bound),
        destination_vault_ids={b["vault_id"]: b["destination_vault_id"] for b in bound})


async def load_plans(session: AsyncSession, policy_ids: set[str] | None = None) -> dict[str, PolicyPlan]:
    """Every policy that has at least one vault (or the named ones, bound or not), by id."""
    query = select(policies)
    bound_query = select(bindings.c.policy_id, bindings.c.vault_id, bindings.c.destination_vault_id)
    if policy_ids is not None:
        query = query.where(policies.c.policy_id.in_(policy_ids))
        bound_query = bound_query.where(bindings.c.policy_id.in_(policy_ids))
    else:
        query = query.where(policies.c.policy_id.in_(select(bindings.c.policy_id)))
    by_policy: dict[str, list] = {}
    for b in (await session.execute(bound_query)).mappings().all():
        by_policy.setdefault(b["policy_id"], []).append(b)
    return {row["policy_id"]: plan_of(row, by_policy.get(row["policy_id"], []))
            for row in (await session.execute(query)).mappings().all()}
