"""Retention runs against the real policy schema on a hand-moved clock: after an automatic backup completes the
vault's rule is applied and the rest deleted through the backup service (a recorder here; the real path is in
tests/e2e/test_policy_schedules.py); a failed run leaves the vault due again; the daily pass prunes old ticks."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from cbr.events.v1 import backup_events_pb2
from cbr_policy.adapters.schedule_tables import retention_due, ticks
from cbr_policy.domain.retention import BackupView
from cbr_policy.service.clock import ManualClock
from cbr_policy.service.retention_runs import RUN_LEASE, RetentionRunner, on_backup_completed
from tests.support.policy_rows import T0, add_policy, drop_policy


class Backups:
    def __init__(self, backups: list[BackupView]):
        self.backups = backups
        self.deleted: list[str] = []
        self.fail = False

    async def vault_backups(self, project_id, vault_id):
        if self.fail:
            raise ConnectionError("backup service away")
        return [b for b in self.backups if b.backup_id not in self.deleted]

    async def delete_backup(self, project_id, backup_id):
        self.deleted.append(backup_id)

    async def vault_locked(self, project_id, vault_id):
        return False


def automatic(hours_ago: int) -> BackupView:
    return BackupView(backup_id=str(uuid.uuid4()), created_time=T0 - dt.timedelta(hours=hours_ago), auto_trigger=True,
                      status="available")


async def due_rows(make_uow) -> dict:
    async with make_uow() as uow:
        return {r.vault_id: r.due_time for r in (await uow.session.execute(select(retention_due))).all()}


async def test_a_completed_automatic_backup_trims_the_vault(make_uow):
    policy_id, [vault] = await add_policy(make_uow, 1, max_backups=2)
    project = (await _project(make_uow, policy_id))
    backups = Backups([automatic(h) for h in range(5)] + [BackupView("manual", T0, False, "available")])
    runner = RetentionRunner(make_uow, backups, ManualClock(T0))
    runner._last_daily = T0  # no daily pass in this test
    event = backup_events_pb2.BackupCompleted(project_id=project, vault_id=vault, auto_trigger=True)
    event.occurred_time.FromDatetime(T0)
    async with make_uow() as uow:
        await on_backup_completed(event, uow)
        await uow.commit()
    assert await runner.run_once() == 1
    assert sorted(backups.deleted) == sorted(b.backup_id for b in backups.backups[2:5])  # the newest two stay
    assert vault not in await due_rows(make_uow)
    await drop_policy(make_uow, policy_id)


async def test_a_failed_run_is_due_again_after_its_lease(make_uow):
    policy_id, [vault] = await add_policy(make_uow, 1, max_backups=1)
    project = await _project(make_uow, policy_id)
    backups = Backups([automatic(h) for h in range(3)])
    backups.fail = True
    clock = ManualClock(T0)
    runner = RetentionRunner(make_uow, backups, clock)
    runner._last_daily = T0
    event = backup_events_pb2.BackupCompleted(project_id=project, vault_id=vault, auto_trigger=True)
    event.occurred_time.FromDatetime(T0)
    async with make_uow() as uow:
        await on_backup_completed(event, uow)
        await uow.commit()
    await runner.run_once()
    assert (await due_rows(make_uow))[vault] == T0 + RUN_LEASE and backups.deleted == []
    backups.fail = False
    assert await runner.run_once() == 0  # still leased
    clock.advance(seconds=RUN_LEASE.total_seconds())
    assert await runner.run_once() == 1 and len(backups.deleted) == 2
    await drop_policy(make_uow, policy_id)


async def test_the_daily_pass_marks_bound_vaults_and_prunes_old_ticks(make_uow):
    policy_id, vaults = await add_policy(make_uow, 2, max_backups=5)
    async with make_uow() as uow:
        for days_ago in (1, 200):
            await uow.session.execute(ticks.insert().values(
                tick_id=str(uuid.uuid4()), policy_id=policy_id, vault_id=vaults[0], project_id="p",
                operation_type="backup", scheduled_time=T0 - dt.timedelta(days=days_ago), status="fired",
                reason="", created_time=T0, attempts=1))
        await uow.commit()
    runner = RetentionRunner(make_uow, Backups([]), ManualClock(T0))
    await runner.run_once()
    async with make_uow() as uow:
        left = (await uow.session.execute(select(ticks.c.scheduled_time).where(ticks.c.policy_id == policy_id))).all()
    assert [r[0] for r in left] == [T0 - dt.timedelta(days=1)]
    await drop_policy(make_uow, policy_id)


async def _project(make_uow, policy_id: str) -> str:
    from cbr_policy.adapters.tables import policies
    async with make_uow() as uow:
        return (await uow.session.execute(select(policies.c.project_id).where(
            policies.c.policy_id == policy_id))).scalar_one()


def replica(hours_ago: int, policy_id: str, auto: bool = True) -> BackupView:
    return BackupView(backup_id=str(uuid.uuid4()), created_time=T0 - dt.timedelta(hours=hours_ago), auto_trigger=auto,
                      status="available", policy_id=policy_id)


def replica_completed(project: str, vault: str, policy_id: str, auto: bool = True, **rule):
    from cbr.replication.v1 import replication_pb2
    event = backup_events_pb2.BackupCompleted(project_id=project, vault_id=vault, auto_trigger=auto,
                                              image_type="replication", policy_id=policy_id,
                                              replica_retention=replication_pb2.ReplicaRetention(policy_id=policy_id,
                                                                                                 **rule))
    event.occurred_time.FromDatetime(T0)
    return event


async def test_a_replica_rule_trims_only_its_policys_auto_replicas(make_uow):
    """A replication vault has no backup policy here: the rule that came with the auto replicas of policy P keeps
    P's newest two; manual replicas and another policy's replicas are never touched by it."""
    project, vault = f"p-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    policy, other = str(uuid.uuid4()), str(uuid.uuid4())
    made = [replica(h, policy) for h in range(4)]
    backups = Backups(made + [replica(9, policy, auto=False), replica(10, other)])
    runner = RetentionRunner(make_uow, backups, ManualClock(T0))
    runner._last_daily = T0
    async with make_uow() as uow:
        await on_backup_completed(replica_completed(project, vault, policy, max_backups=2), uow)
        await uow.commit()
    assert vault in await due_rows(make_uow)
    assert await runner.run_once() == 1
    assert sorted(backups.deleted) == sorted(b.backup_id for b in made[2:])


async def test_a_replica_without_a_rule_or_a_manual_one_deletes_nothing(make_uow):
    project, vault, policy = f"p-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()), str(uuid.uuid4())
    backups = Backups([replica(h, policy) for h in range(4)])
    runner = RetentionRunner(make_uow, backups, ManualClock(T0))
    runner._last_daily = T0
    no_rule = replica_completed(project, vault, policy)
    no_rule.ClearField("replica_retention")
    async with make_uow() as uow:
        await on_backup_completed(no_rule, uow)
        await on_backup_completed(replica_completed(project, vault, policy, auto=False, max_backups=1), uow)
        await uow.commit()
    assert vault not in await due_rows(make_uow)
    assert await runner.apply(project, vault) == [] and backups.deleted == []


async def test_the_newest_replica_rule_wins_and_a_locked_vault_keeps_its_replicas(make_uow):
    project, vault, policy = f"p-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()), str(uuid.uuid4())
    made = [replica(h, policy) for h in range(4)]
    backups = Backups(made)
    runner = RetentionRunner(make_uow, backups, ManualClock(T0))
    runner._last_daily = T0
    older = replica_completed(project, vault, policy, max_backups=1)
    older.occurred_time.FromDatetime(T0 - dt.timedelta(hours=1))
    async with make_uow() as uow:
        await on_backup_completed(replica_completed(project, vault, policy, max_backups=3), uow)
        await on_backup_completed(older, uow)  # arrives late: the newer rule stays
        await uow.commit()
    backups.vault_locked = _locked
    decisions = await runner.apply(project, vault)
    assert backups.deleted == [] and all(d.keep for d in decisions)
    backups.vault_locked = Backups.vault_locked.__get__(backups)
    await runner.apply(project, vault)
    assert backups.deleted == [made[3].backup_id]


async def _locked(project_id, vault_id):
    return True
