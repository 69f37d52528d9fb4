"""Retention runs: after each automatic backup of a vault completes, and daily for every bound vault, apply the
vault's backup policy (domain/retention.py) and delete what it no longer keeps, through the backup service.
PreviewRetention answers the same question without deleting.

Replication vaults have no backup policy here: the rule of the source region's replication policy travels with
each auto replica (BackupCompleted.replica_retention), is kept per (vault, policy) and applied to the replicas that
policy made, never to manual replicas or another policy's."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cbr.events.v1 import backup_events_pb2, policy_events_pb2 as ev
from cbr_common.errors import InvalidArgumentError
from cbr_common.jetstream import Subscription
from cbr_policy.adapters.backups import BackupPort, PeerError
from cbr_policy.adapters.plans import PolicyPlan, load_plans
from cbr_policy.adapters.schedule_tables import replica_rules, retention_due, ticks
from cbr_policy.domain import errors
from cbr_policy.domain.retention import BackupView, Decision, RetentionRule, check_rule, decide
from cbr_policy.service.clock import Clock
from cbr_policy.service.loops import every

log = logging.getLogger("cbr.retention")
DAILY = dt.timedelta(days=1)
DELETES_IN_FLIGHT = 16  # delete requests a retention run has open at once
RUN_LEASE = dt.timedelta(minutes=10)  # a vault's run not confirmed by then is due again
TICKS_KEPT = dt.timedelta(days=90)  # the daily pass prunes older ticks


async def mark_due(uow, project_id: str, vault_id: str, when: dt.datetime) -> None:
    stmt = pg_insert(retention_due).values(vault_id=vault_id, project_id=project_id, due_time=when)
    await uow.session.execute(stmt.on_conflict_do_update(index_elements=[retention_due.c.vault_id],
                                                         set_={"due_time": stmt.excluded.due_time}))


async def on_backup_completed(event: backup_events_pb2.BackupCompleted, uow) -> None:
    """An automatic backup completed: its vault's retention runs soon (manual backups change nothing). An auto
    replica brings its policy's rule, which is kept for its vault first."""
    if not event.auto_trigger:
        return
    when = event.occurred_time.ToDatetime(dt.timezone.utc)
    if event.image_type == "replication":
        if not event.HasField("replica_retention") or not event.replica_retention.policy_id:
            return  # nothing to apply: a replica without a rule is kept
        await keep_replica_rule(uow, event.project_id, event.vault_id, event.replica_retention, when)
    await mark_due(uow, event.project_id, event.vault_id, when)


def replica_rule(retention) -> RetentionRule:
    """The RetentionRule of a ReplicaRetention (fields as the policy's OperationDefinition)."""
    return RetentionRule(
        max_backups=retention.max_backups if retention.HasField("max_backups") else -1,
        retention_duration_days=(retention.retention_duration_days if retention.HasField("retention_duration_days")
                                 else -1),
        day_backups=retention.day_backups, week_backups=retention.week_backups,
        month_backups=retention.month_backups, year_backups=retention.year_backups, timezone=retention.timezone)


async def keep_replica_rule(uow, project_id: str, vault_id: str, retention, when: dt.datetime) -> None:
    rule = replica_rule(retention)
    try:
        check_rule(rule)
    except InvalidArgumentError as exc:  # checked at the source already; a bad one is never applied
        log.warning("replica retention rule of policy %s refused: %s", retention.policy_id, exc)
        return
    values = dict(project_id=project_id, max_backups=rule.max_backups,
                  retention_duration_days=rule.retention_duration_days, day_backups=rule.day_backups,
                  week_backups=rule.week_backups, month_backups=rule.month_backups, year_backups=rule.year_backups,
                  timezone=rule.timezone, updated_time=when)
    stmt = pg_insert(replica_rules).values(vault_id=vault_id, policy_id=retention.policy_id, **values)
    await uow.session.execute(stmt.on_conflict_do_update(
        index_elements=[replica_rules.c.vault_id, replica_rules.c.policy_id], set_=values,
        where=replica_rules.c.updated_time <= stmt.excluded.updated_time))


async def rules_for_replicas(session, vault_id: str) -> dict[str, tuple[str, RetentionRule]]:
    """policy id -> (project, rule) of the replica rules a vault holds."""
    rows = (await session.execute(select(replica_rules).where(replica_rules.c.vault_id == vault_id))).mappings()
    return {r["policy_id"]: (r["project_id"], RetentionRule(
        max_backups=r["max_backups"], retention_duration_days=r["retention_duration_days"],
        day_backups=r["day_backups"], week_backups=r["week_backups"], month_backups=r["month_backups"],
        year_backups=r["year_backups"], timezone=r["timezone"])) for r in rows}


SUBSCRIPTIONS = [Subscription(backup_events_pb2.BackupCompleted, on_backup_completed)]


def backup_plan_of(plans: dict[str, PolicyPlan], vault_id: str) -> PolicyPlan | None:
    return next((p for p in plans.values() if p.operation_type == "backup" and vault_id in p.vault_ids), None)


class RetentionRunner:
    def __init__(self, make_uow: Callable, backups: BackupPort, clock: Clock, batch: int = 20):
        self._uow = make_uow
        self._backups = backups
        self.clock = clock
        self.batch = batch
        self._last_daily: dt.datetime | None = None

    async def run(self, interval: float = 1.0) -> None:
        await every(interval, self.run_once, log, "retention pass")

    async def run_once(self) -> int:
        """Applies retention to the vaults that are due. Each is leased (its due time moved RUN_LEASE on) rather
        than taken: a replica that dies mid-run leaves it due again, and a backup completing meanwhile (which
        moves the due time back to now) gets its own run."""
        await self._daily()
        now = self.clock.now()
        leased_until = now + RUN_LEASE
        async with self._uow() as uow:
            rows = (await uow.session.execute(
                select(retention_due).where(retention_due.c.due_time <= now).limit(self.batch)
                .with_for_update(skip_locked=True))).mappings().all()
            if not rows:
                return 0
            await uow.session.execute(update(retention_due).where(
                retention_due.c.vault_id.in_([r["vault_id"] for r in rows])).values(due_time=leased_until))
            await uow.commit()
        for row in rows:
            try:
                await self.apply(row["project_id"], row["vault_id"])
            except Exception:
                log.exception("retention of vault %s failed; it runs again after its lease", row["vault_id"])
                continue
            async with self._uow() as uow:
                await uow.session.execute(delete(retention_due).where(
                    retention_due.c.vault_id == row["vault_id"], retention_due.c.due_time == leased_until))
                await uow.commit()
        return len(rows)

    async def _daily(self) -> None:
        """Once a day (by the scheduler's clock) every vault bound to a backup policy is due, and ticks older
        than TICKS_KEPT go."""
        now = self.clock.now()
        if self._last_daily is not None and now - self._last_daily < DAILY:
            return
        self._last_daily = now
        async with self._uow() as uow:
            for plan in (await load_plans(uow.session)).values():
                if plan.operation_type == "backup":
                    for vault_id in plan.vault_ids:
                        await mark_due(uow, plan.project_id, vault_id, now)
            for row in (await uow.session.execute(
                    select(replica_rules.c.vault_id, replica_rules.c.project_id).distinct())).all():
                await mark_due(uow, row.project_id, row.vault_id, now)
            await uow.session.execute(delete(ticks).where(ticks.c.scheduled_time < now - TICKS_KEPT,
                                                          ticks.c.status != "firing"))
            await uow.commit()

    async def apply(self, project_id: str, vault_id: str) -> list[Decision]:
        """Deletes what the vault's backup policy (or, in a replication vault, each replica rule) no longer
        keeps; returns the decisions."""
        async with self._uow() as uow:
            plan = backup_plan_of(await load_plans(uow.session), vault_id)
            replica_plans = {} if plan is not None else await rules_for_replicas(uow.session, vault_id)
        rules = ({plan.policy_id: plan.rule} if plan is not None and plan.project_id == project_id else
                 {policy_id: rule for policy_id, (project, rule) in replica_plans.items() if project == project_id})
        if not rules:
            return []
        locked = await self._backups.vault_locked(project_id, vault_id)
        if locked is None:
            return []  # the vault is gone
        backups = await self._backups.vault_backups(project_id, vault_id)
        decisions = []
        for policy_id, rule in rules.items():
            decisions += await self._apply_rule(project_id, vault_id, policy_id, rule, locked,
                                                backups if plan is not None else _made_by(backups, policy_id))
        return decisions

    async def _apply_rule(self, project_id: str, vault_id: str, policy_id: str, rule: RetentionRule, locked: bool,
                          backups: list[BackupView]) -> list[Decision]:
        decisions = decide(backups, rule, self.clock.now(), vault_locked=locked)
        deleted = []
        limit = asyncio.Semaphore(DELETES_IN_FLIGHT)

        async def delete(backup_id: str) -> None:
            async with limit:
                try:
                    await self._backups.delete_backup(project_id, backup_id)
                    deleted.append(backup_id)
                except PeerError as exc:  # e.g. deleted meanwhile, or busy: the next run tries again
                    log.warning("retention could not delete backup %s: %s", backup_id, exc)

        await asyncio.gather(*(delete(d.backup_id) for d in decisions if not d.keep))
        async with self._uow() as uow:
            await uow.publish(ev.RetentionApplied(
                project_id=project_id, vault_id=vault_id, policy_id=policy_id, deleted_backup_ids=deleted,
                kept_count=sum(d.keep for d in decisions)))
            await uow.commit()
        log.info("retention applied", extra={"fields": {"vault": vault_id, "deleted": len(deleted),
                                                       "kept": sum(d.keep for d in decisions)}})
        return decisions


def _made_by(backups: list[BackupView], policy_id: str) -> list[BackupView]:
    """The automatic backups one policy made (a replica rule decides on these alone)."""
    return [b for b in backups if b.auto_trigger and b.policy_id == policy_id]


async def preview(project_id: str, vault_id: str, policy_id: str, rule: RetentionRule | None,
                  evaluation_time: dt.datetime | None, make_uow: Callable, backups: BackupPort,
                  clock: Clock) -> list[Decision]:
    """Which backups of the vault a rule keeps and deletes, and why, deleting nothing. The rule: the one given,
    else the named policy's, else the vault's backup policy's."""
    async with make_uow() as uow:
        plans = await load_plans(uow.session, {policy_id} if policy_id else None)  # named: bound or not
    if rule is None:
        plan = plans.get(policy_id) if policy_id else backup_plan_of(plans, vault_id)
        if plan is None or plan.project_id != project_id:
            raise errors.PolicyNotFoundError(
                f"policy {policy_id} not found" if policy_id else f"vault {vault_id} has no backup policy")
        rule = plan.rule
    else:
        rule = check_rule(rule)
    locked = await backups.vault_locked(project_id, vault_id)
    if locked is None:
        raise errors.VaultNotFoundError(f"vault {vault_id} not found")
    return decide(await backups.vault_backups(project_id, vault_id), rule, evaluation_time or clock.now(),
                  vault_locked=locked)
