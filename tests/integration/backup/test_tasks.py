"""TaskService through real gRPC, on the vault_delete tasks the backup service records when vaults are deleted:
get, list with every filter and paging, watch, cancel, and every bad input with its code."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from cbr.backup.v1 import task_pb2 as tp
from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain.model import Task
from tests.support.calls import create_vault, expect_error
from tests.support.services import eventually

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED, DENIED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED
VAULT_DELETE, SUCCESS = tp.OPERATION_TYPE_VAULT_DELETE, tp.TASK_STATUS_SUCCESS


async def deleted_vaults(caller, count: int = 1) -> list[tuple[vp.Vault, tp.Task]]:
    """Creates and deletes `count` vaults; returns each with its vault_delete task once that has succeeded."""
    started = []
    for i in range(count):
        vault = await create_vault(caller, name=f"vault-{i}")
        started.append((vault, (await caller.vault.DeleteVault(vp.DeleteVaultRequest(
            vault_id=vault.vault_id))).task_id))

    async def all_done():
        tasks = [(await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task for _, task_id in started]
        return tasks if all(t.status == SUCCESS for t in tasks) else None
    tasks = await eventually(all_done)
    return [(vault, task) for (vault, _), task in zip(started, tasks)]


async def listed(caller, **fields) -> tp.ListTasksResponse:
    return await caller.tasks.ListTasks(tp.ListTasksRequest(**fields))


async def listed_ids(caller, **fields) -> list[str]:
    return [t.task_id for t in (await listed(caller, **fields)).tasks]


async def watch(caller, task_id: str) -> list[tp.Task]:
    return [reply.task async for reply in caller.tasks.WatchTask(tp.WatchTaskRequest(task_id=task_id))]


def stamp(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def shifted(ts: Timestamp, **delta) -> Timestamp:
    return stamp(ts.ToDatetime() + dt.timedelta(**delta))


async def test_vault_delete_task_as_recorded(caller):
    [(vault, task)] = await deleted_vaults(caller)
    assert uuid.UUID(task.task_id)
    assert (task.project_id, task.operation_type, task.status, task.progress) == (
        caller.project_id, VAULT_DELETE, SUCCESS, 100)
    assert (task.vault_id, task.vault_name) == (vault.vault_id, vault.name)
    assert (task.extra_info["fail_count"], task.extra_info["total_count"]) == ("0", "0")
    assert task.extra_info["attempts"] == "1" and task.extra_info["worker"]  # the worker that ran it
    assert not task.HasField("error")
    assert (task.resource_id, task.backup_id, task.policy_id) == ("", "", "")
    for field in ("created_time", "started_time", "ended_time", "updated_time"):
        assert task.HasField(field), field
    assert task.created_time.ToDatetime() <= task.started_time.ToDatetime() <= task.ended_time.ToDatetime()
    again = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task.task_id.upper()))).task
    assert again == task


async def test_list_filters_and_paging(caller):
    done = await deleted_vaults(caller, 3)
    everything = await listed(caller)
    assert everything.count == 3 and len(everything.tasks) == 3
    assert {t.task_id for t in everything.tasks} == {t.task_id for _, t in done}
    created = [t.created_time.ToDatetime() for t in everything.tasks]
    assert created == sorted(created, reverse=True)  # newest first
    newest_first = [t.task_id for t in everything.tasks]
    assert list(everything.tasks) == [t for _, t in sorted(done, key=lambda d: newest_first.index(d[1].task_id))]

    page = await listed(caller, page=cp.PageRequest(limit=2, offset=1))
    assert page.count == 3 and [t.task_id for t in page.tasks] == newest_first[1:3]
    past_end = await listed(caller, page=cp.PageRequest(limit=2, offset=10))
    assert past_end.count == 3 and list(past_end.tasks) == []
    assert (await listed(caller, page=cp.PageRequest(limit=1000))).count == 3

    assert (await listed(caller, operation_type=VAULT_DELETE)).count == 3
    assert (await listed(caller, operation_type=tp.OPERATION_TYPE_BACKUP)).count == 0
    assert (await listed(caller, status=SUCCESS)).count == 3
    assert (await listed(caller, status=tp.TASK_STATUS_RUNNING)).count == 0
    vault, task = done[1]
    assert await listed_ids(caller, vault_id=vault.vault_id) == [task.task_id]
    assert await listed_ids(caller, vault_id=vault.vault_id.upper()) == [task.task_id]
    assert await listed_ids(caller, vault_id=str(uuid.uuid4())) == []
    assert await listed_ids(caller, resource_id=str(uuid.uuid4())) == []
    assert await listed_ids(caller, vault_id=vault.vault_id, operation_type=VAULT_DELETE, status=SUCCESS) == [
        task.task_id]
    assert await listed_ids(caller, vault_id=vault.vault_id, status=tp.TASK_STATUS_FAILED) == []


async def test_list_time_range(caller):
    await deleted_vaults(caller, 3)
    newest, middle, oldest = (await listed(caller)).tasks
    assert oldest.created_time.ToDatetime() < middle.created_time.ToDatetime() < newest.created_time.ToDatetime()

    # start_time: created at or after; end_time: created before.
    assert await listed_ids(caller, start_time=middle.created_time) == [newest.task_id, middle.task_id]
    assert await listed_ids(caller, end_time=middle.created_time) == [oldest.task_id]
    just_middle = await listed(caller, start_time=middle.created_time,
                               end_time=shifted(middle.created_time, microseconds=1))
    assert just_middle.count == 1 and [t.task_id for t in just_middle.tasks] == [middle.task_id]
    assert (await listed(caller, start_time=shifted(newest.created_time, microseconds=1))).count == 0
    assert (await listed(caller, end_time=oldest.created_time)).count == 0
    whole = await listed(caller, start_time=shifted(oldest.created_time, hours=-1),
                         end_time=shifted(newest.created_time, hours=1), page=cp.PageRequest(limit=1, offset=1))
    assert whole.count == 3 and [t.task_id for t in whole.tasks] == [middle.task_id]


async def test_list_rejects_bad_input(caller):
    await deleted_vaults(caller)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    cases = [
        (dict(start_time=stamp(now), end_time=stamp(now)), "BackupService.6509"),
        (dict(start_time=stamp(now), end_time=stamp(now - dt.timedelta(seconds=1))), "BackupService.6509"),
        (dict(operation_type=99), "BackupService.6400"),  # undefined enum numbers: refused at the edge
        (dict(status=99), "BackupService.6400"),
        (dict(vault_id="../x"), "BackupService.6504"),
        (dict(resource_id="x' OR 1=1 --"), "BackupService.6504"),
        (dict(page=cp.PageRequest(limit=-1)), "BackupService.6505"),
        (dict(page=cp.PageRequest(limit=1001)), "BackupService.6505"),
        (dict(page=cp.PageRequest(limit=10, offset=-1)), "BackupService.6505"),
    ]
    for fields, cbr_code in cases:
        error = await expect_error(caller.tasks.ListTasks(tp.ListTasksRequest(**fields)), INVALID, cbr_code)
        assert error.details()


async def test_watch_finished_task_yields_it_once_and_ends(caller):
    [(_, task)] = await deleted_vaults(caller)
    assert await watch(caller, task.task_id) == [task]


@pytest.mark.parametrize("task_id, code, cbr_code", [
    (str(uuid.uuid4()), NOT_FOUND, "BackupService.6524"),
    ("", INVALID, "BackupService.6504"),
    ("../x", INVALID, "BackupService.6504"),
    ("not-a-uuid", INVALID, "BackupService.6504"),
])
async def test_unknown_or_malformed_task_ids(caller, task_id, code, cbr_code):
    await expect_error(caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id)), code, cbr_code)
    await expect_error(watch(caller, task_id), code, cbr_code)
    await expect_error(caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=task_id)), code, cbr_code)


async def test_cancelling_a_finished_task_is_refused(caller):
    [(_, task)] = await deleted_vaults(caller)
    error = await expect_error(caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=task.task_id)),
                               FAILED, "BackupService.6540")
    assert "success" in error.details()
    assert (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task.task_id))).task == task
    assert (await listed(caller, status=tp.TASK_STATUS_CANCELLED)).count == 0


async def test_another_projects_tasks_are_invisible(services, caller):
    [(vault, task)] = await deleted_vaults(caller)
    stranger = services.caller()
    assert (await listed(stranger)).count == 0
    assert (await listed(stranger, vault_id=vault.vault_id)).count == 0
    await expect_error(stranger.tasks.GetTask(tp.GetTaskRequest(task_id=task.task_id)),
                       NOT_FOUND, "BackupService.6524")
    await expect_error(watch(stranger, task.task_id), NOT_FOUND, "BackupService.6524")
    await expect_error(stranger.tasks.CancelTask(tp.CancelTaskRequest(task_id=task.task_id)),
                       NOT_FOUND, "BackupService.6524")


async def test_readonly_reads_tasks_but_cannot_cancel(services, caller):
    [(_, task)] = await deleted_vaults(caller)
    reader = services.caller(caller.project_id, roles=("cbr_readonly",))
    assert await listed_ids(reader) == [task.task_id]
    assert (await reader.tasks.GetTask(tp.GetTaskRequest(task_id=task.task_id))).task == task
    assert await watch(reader, task.task_id) == [task]
    await expect_error(reader.tasks.CancelTask(tp.CancelTaskRequest(task_id=task.task_id)), DENIED)


async def test_watch_follows_a_live_task_until_it_is_cancelled(services):
    """A task still waiting (no worker yet) is streamed until it ends; here CancelTask ends it."""
    caller = services.caller()
    task_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc)
    async with BackupUnitOfWork(services.runtimes["backup"].db) as uow:
        await uow.tasks.add(Task(task_id=task_id, project_id=caller.project_id, operation_type="backup",
                                 created_time=now, updated_time=now))
        await uow.commit()

    async def watch_all():
        return [reply.task async for reply in caller.tasks.WatchTask(tp.WatchTaskRequest(task_id=task_id),
                                                                     timeout=30)]
    watcher = asyncio.create_task(watch_all())
    await asyncio.sleep(1.5)  # long enough for the quiet-task polling to back off
    assert not watcher.done()
    await caller.tasks.CancelTask(tp.CancelTaskRequest(task_id=task_id))
    seen = await asyncio.wait_for(watcher, timeout=10)
    assert [t.status for t in seen] == [tp.TASK_STATUS_WAITING, tp.TASK_STATUS_CANCELLED]
