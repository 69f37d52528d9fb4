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
