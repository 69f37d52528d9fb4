"""The scheduler on a hand-moved clock, against the real Postgres schema: ticks recorded before the work is
asked for, missed ticks coalesced, two schedulers never doubling a tick, a stopped scheduler's tick taken over.
The backup service is replaced here by a recorder of what would have been asked of it (the real path is in
tests/e2e/test_policy_schedules.py)."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from prometheus_client import REGISTRY
from sqlalchemy import select, update

from cbr_common.db import Database

from cbr_policy.adapters.backups import CheckpointMade, PeerError
from cbr_policy.adapters.tables import bindings, metadata, policies
from cbr_policy.adapters.unit_of_work import PolicyUnitOfWork
from cbr_policy.service.clock import ManualClock
from cbr_policy.service.scheduler import Scheduler
from tests.support.policy_rows import T0, add_policy, drop_policy, ticks_of


class RecordingBackups:
    """Stands in for the backup service: remembers each checkpoint request, answers as told."""

    def __init__(self):
        self.requests = []
        self.running = False
        self.skip_all = False
        self.fail_with: Exception | None = None

    async def create_checkpoint(self, req) -> CheckpointMade:
        if self.fail_with is not None:
            raise self.fail_with
        self.requests.append(req)
        # the same request gives the same checkpoint; skip_all plays a vault whose every resource is busy
        checkpoint_id = str(uuid.uuid5(uuid.NAMESPACE_URL, req.request_id))
        if self.skip_all:
            return CheckpointMade(checkpoint_id, 0, ("BackupService.6732: busy",))
        return CheckpointMade(checkpoint_id, 1)

    async def checkpoint_running(self, project_id, checkpoint_id) -> bool:
        return self.running


def at(hour: int, minute: int = 0, second: int = 5) -> dt.datetime:
    return T0.replace(hour=hour, minute=minute, second=second)


async def test_fires_each_hour_once_with_the_tick_as_request_id(make_uow):
    clock, port = ManualClock(T0), RecordingBackups()
    scheduler = Scheduler(make_uow, port, clock)
    policy_id, vaults = await add_policy(make_uow, 2, full_backup_interval=2)
    await scheduler.run_once()
    assert await ticks_of(make_uow, policy_id) == []  # 10:00 passed before the policy was scheduled
    clock.current = at(11)
    await scheduler.run_once()
    await scheduler.run_once()  # again within the same hour: nothing new
    clock.current = at(11, 40)
    await scheduler.run_once()
    recorded = await ticks_of(make_uow, policy_id)
    assert [(t["vault_id"], t["scheduled_time"], t["status"]) for t in recorded] == \
        [(v, at(11, second=0), "fired") for v in sorted(vaults)]
    assert sorted(r.request_id for r in port.requests) == sorted(t["tick_id"] for t in recorded)
    assert all(r.incremental for r in port.requests)  # the first of every two is incremental
    clock.current = at(12, 0, 1)
    await scheduler.run_once()
    assert [r.incremental for r in port.requests[2:]] == [False, False]  # full_backup_interval=2: a full read
    assert {t["checkpoint_id"] for t in await ticks_of(make_uow, policy_id)} == \
        {str(uuid.uuid5(uuid.NAMESPACE_URL, r.request_id)) for r in port.requests}
    await drop_policy(make_uow, policy_id)


async def test_missed_ticks_coalesce_into_one_catch_up_run(make_uow):
    clock, port = ManualClock(at(11, 30)), RecordingBackups()
    scheduler = Scheduler(make_uow, port, clock, catch_up_window=dt.timedelta(minutes=45))
    policy_id, [vault] = await add_policy(make_uow, 1)
    await scheduler.run_once()
    clock.current = at(15, 20)  # the scheduler was down for 12:00, 13:00, 14:00 and 15:00
    await scheduler.run_once()
    recorded = await ticks_of(make_uow, policy_id)
    assert [(t["scheduled_time"].hour, t["status"]) for t in recorded] == \
        [(12, "skipped"), (13, "skipped"), (14, "skipped"), (15, "fired")]
    assert all("coalesced" in t["reason"] for t in recorded[:3])
    assert len(port.requests) == 1 and port.requests[0].request_id == recorded[-1]["tick_id"]
    # cbr_scheduler_lag_seconds: the pass found the schedule due since 12:00; the next finds nothing due.
    assert REGISTRY.get_sample_value("cbr_scheduler_lag_seconds") == (at(15, 20) - at(12, second=0)).total_seconds()
    await scheduler.run_once()
    assert REGISTRY.get_sample_value("cbr_scheduler_lag_seconds") == 0
    clock.current = at(18, 50)  # 16:00 .. 18:00 missed, the latest 50 minutes ago: outside the window
    await scheduler.run_once()
    late = (await ticks_of(make_uow, policy_id))[4:]
    assert [(t["scheduled_time"].hour, t["status"]) for t in late] == [(16, "skipped"), (17, "skipped"),
                                                                       (18, "skipped")]
    assert all("outside" in t["reason"] for t in late) and len(port.requests) == 1
    await drop_policy(make_uow, policy_id)


async def test_two_schedulers_never_double_a_tick(make_uow, database_url):
    clock, port = ManualClock(at(10, 30)), RecordingBackups()
    other_db = Database(database_url, metadata.schema)
    try:
        first = Scheduler(make_uow, port, clock, batch=7)
        second = Scheduler(lambda: PolicyUnitOfWork(other_db), port, clock, batch=7)
        policy_id, vaults = await add_policy(make_uow, 60)
        await asyncio.gather(first.run_once(), second.run_once())
        for hour in (11, 12, 13):
            clock.current = at(hour)
            await asyncio.gather(first.run_once(), second.run_once(), first.run_once())
        recorded = await ticks_of(make_uow, policy_id)
        assert len(recorded) == 3 * 60 and all(t["status"] == "fired" for t in recorded)
        asked = [(r.vault_id, r.request_id) for r in port.requests]
        assert len(asked) == len(set(asked)) == 3 * 60
    finally:
        await other_db.close()
    await drop_policy(make_uow, policy_id)


async def test_a_running_previous_backup_skips_the_tick_and_failures_are_recorded(make_uow):
    clock, port = ManualClock(at(10, 30)), RecordingBackups()
    scheduler = Scheduler(make_uow, port, clock)
    policy_id, [vault] = await add_policy(make_uow, 1)
    await scheduler.run_once()
    clock.current = at(11)
    await scheduler.run_once()
    port.running = True
    clock.current = at(12)
    await scheduler.run_once()
    port.running, port.skip_all = False, True  # the backup service itself finds every resource busy
    clock.current = at(13)
    await scheduler.run_once()
    port.skip_all, port.fail_with = False, PeerError("backup service answered NOT_FOUND: vault gone")
    clock.current = at(14)
    await scheduler.run_once()
    recorded = await ticks_of(make_uow, policy_id)
    assert [(t["scheduled_time"].hour, t["status"]) for t in recorded] == [(11, "fired"), (12, "skipped"),
                                                                           (13, "skipped"), (14, "failed")]
    assert "still going" in recorded[1]["reason"] and "6732" in recorded[2]["reason"]
    assert recorded[2]["checkpoint_id"] and "vault gone" in recorded[3]["reason"]
    await drop_policy(make_uow, policy_id)


async def test_disabled_policies_do_not_fire(make_uow):
    clock, port = ManualClock(at(10, 30)), RecordingBackups()
    scheduler = Scheduler(make_uow, port, clock)
    policy_id, _ = await add_policy(make_uow, 3, enabled=False)
    clock.current = at(12)
    await scheduler.run_once()
    assert await ticks_of(make_uow, policy_id) == [] and port.requests == []
    async with make_uow() as uow:  # enabled again: it fires from the next fire time on
        await uow.session.execute(update(policies).where(policies.c.policy_id == policy_id).values(
            enabled=True, updated_time=at(12)))
        await uow.commit()
    await scheduler.run_once()
    clock.current = at(13)
    await scheduler.run_once()
    assert {t["scheduled_time"] for t in await ticks_of(make_uow, policy_id)} == {at(13, second=0)}
    await drop_policy(make_uow, policy_id)


async def test_a_stopped_schedulers_firing_tick_is_taken_over_with_the_same_request_id(make_uow):
    clock, port = ManualClock(at(10, 30)), RecordingBackups()
    stopped = Scheduler(make_uow, port, clock)
    policy_id, [vault] = await add_policy(make_uow, 1)
    await stopped.reconcile()
    clock.current = at(11)
    recorded = await stopped.record_due()  # ... and it stops before asking for the backup
    assert len(recorded) == 1 and port.requests == []
    rescuer = Scheduler(make_uow, port, clock, firing_lease=dt.timedelta(0))
    await asyncio.sleep(0.01)
    await rescuer.run_once()
    assert [r.request_id for r in port.requests] == [recorded[0].tick_id]
    [tick] = await ticks_of(make_uow, policy_id)
    assert tick["status"] == "fired" and tick["attempts"] == 1
    await drop_policy(make_uow, policy_id)


async def test_replication_policies_fire_as_events_and_are_listed(make_uow):
    from cbr.events.v1 import policy_events_pb2
    from cbr_common.outbox import outbox_table_of
    clock, port = ManualClock(at(10, 30)), RecordingBackups()
    scheduler = Scheduler(make_uow, port, clock)
    policy_id, [vault] = await add_policy(make_uow, 1, destination_region="eu-2", destination_project_id="p2")
    async with make_uow() as uow:  # the same policy, made a replication one (bound as such)
        await uow.session.execute(update(policies).where(policies.c.policy_id == policy_id).values(
            operation_type="replication"))
        await uow.session.execute(update(bindings).where(bindings.c.policy_id == policy_id).values(
            operation_type="replication", destination_vault_id="9" * 8 + "-0000-4000-8000-" + "0" * 12))
        await uow.commit()
    await scheduler.run_once()
    clock.current = at(11)
    await scheduler.run_once()
    [tick] = await ticks_of(make_uow, policy_id)
    assert tick["status"] == "fired" and tick["reason"] == "replication requested" and port.requests == []
    outbox = outbox_table_of(metadata)
    async with make_uow() as uow:
        rows = (await uow.session.execute(select(outbox.c.payload).where(
            outbox.c.subject == "cbr.policy.triggered"))).all()
    events = [policy_events_pb2.PolicyTriggered.FromString(r[0]) for r in rows]
    [event] = [e for e in events if e.tick_id == tick["tick_id"]]
    assert (event.vault_id, event.operation_type, event.destination_region) == (vault, "replication", "eu-2")
    assert event.destination_vault_id.startswith("99999999")
    await drop_policy(make_uow, policy_id)
