"""Postgres paused and stopped under the running services: calls answer UNAVAILABLE instead of hanging, and a
backup the outage cut short completes once Postgres is back, without using up an attempt."""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr_common.outages import outage_log
from tests.integration.faults.conftest import postgres_paused
from tests.support.backups import checkpoint, fill, get_backup, running_with_progress, wait_success
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, expect_error, ref
from tests.support.services import eventually

CLIENT_DEADLINE = 60.0  # far above the server's own bound (ping 2 s, statement 5 s + 1 s grace, connect 2 s)



async def test_a_paused_postgres_answers_unavailable_then_recovers(fault_caller, fault_infra, capsys):
    caller = fault_caller
    await caller.tasks.ListTasks(tp.ListTasksRequest(), timeout=CLIENT_DEADLINE)  # the pool holds a connection
    with postgres_paused(fault_infra.postgres):
        started = time.monotonic()
        await expect_error(caller.tasks.ListTasks(tp.ListTasksRequest(), timeout=CLIENT_DEADLINE),
                           grpc.StatusCode.UNAVAILABLE)
        answered = time.monotonic() - started
        # A second call meets a pool whose connection is gone: it must not hang either.
        await expect_error(caller.tasks.GetTask(tp.GetTaskRequest(task_id="00000000-0000-4000-8000-000000000000"),
                                                timeout=CLIENT_DEADLINE), grpc.StatusCode.UNAVAILABLE)
    resumed = time.monotonic()
    reply = await eventually(lambda: caller.tasks.ListTasks(tp.ListTasksRequest(), timeout=CLIENT_DEADLINE),
                             timeout=30)
    assert reply.count == 0
    with capsys.disabled():
        print(f"\n[measured] paused Postgres: UNAVAILABLE after {answered:.1f} s; "
              f"serving again {time.monotonic() - resumed:.1f} s after SIGCONT")


async def test_postgres_stopped_mid_backup_the_backup_completes_without_using_an_attempt(
        fault_caller, fault_infra, fault_services, capsys, caplog):
    caller, services = fault_caller, fault_services
    caplog.set_level(logging.INFO)
    outage_log("database").reset()  # whatever an earlier test in this process left
    disk = await create_disk(caller, "outage", 48 * MIB)
    fill(disk.path, 0, 40, seed=21)
    vault = await create_vault(caller, "outage", DISK, BACKUP, resources=[ref(disk)])
    await services.start_worker(rate_limit_mbps=10)
    try:
        cp = await checkpoint(caller, vault.vault_id)
        task_id, backup_id = cp.resources[0].task_id, cp.resources[0].backup_id
        await running_with_progress(caller, task_id)
        fault_infra.postgres.stop()
        await expect_error(caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id), timeout=CLIENT_DEADLINE),
                           grpc.StatusCode.UNAVAILABLE)
        await asyncio.sleep(3.0)  # the worker meets the outage meanwhile
        fault_infra.postgres.start()
        back = time.monotonic()
        task = await wait_success(caller, task_id, timeout=120)
        recovered = time.monotonic() - back
    finally:
        await services.stop_workers()
    assert task.extra_info["attempts"] == "1", dict(task.extra_info)  # the outage gave its attempt back
    assert "last_outage" in task.extra_info
    assert (task.progress, task.bytes_done) == (100, task.bytes_total)
    assert (await get_backup(caller, backup_id)).status == bp.BACKUP_STATUS_AVAILABLE
    # The whole process (services, relays, consumers, the worker) logged the outage once and its end once.
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("dependency") == "database"]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.INFO], [(r.getMessage(), r.fields) for r in lines]
    with capsys.disabled():
        print(f"\n[measured] Postgres stopped mid-backup: task success {recovered:.1f} s after Postgres restarted "
              f"(includes the rest of a rate-limited backup); the outage it met: {task.extra_info['last_outage']}")

