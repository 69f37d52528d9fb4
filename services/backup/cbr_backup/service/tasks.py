"""Task (operation log) use cases: list, get, watch until final, cancel."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from cbr_backup.adapters.repository import TaskFilter
from cbr_backup.adapters.unit_of_work import BackupUnitOfWork
from cbr_backup.domain import errors, rules
from cbr_backup.domain import lifecycle as lc
from cbr_backup.domain.model import Task
from cbr_backup.service import lifecycle
from cbr_backup.service.commands import ListTasks
from cbr_common.db import utcnow

WATCH_POLL_SECONDS = 0.2
WATCH_MAX_POLL_SECONDS = 2.0


async def list_tasks(cmd: ListTasks, uow: BackupUnitOfWork) -> tuple[list[Task], int]:
    """Newest first, as an operation log reads."""
    limit, offset = rules.check_page(cmd.limit, cmd.offset)
    rules.check_task_filters(cmd.operation_type, cmd.status)
    rules.check_time_range(cmd.start_time, cmd.end_time)
    flt = TaskFilter(project_id=cmd.project_id, operation_type=cmd.operation_type, status=cmd.status,
                     vault_id=rules.check_id(cmd.vault_id, "vault_id") if cmd.vault_id else "",
                     resource_id=rules.check_id(cmd.resource_id, "resource_id") if cmd.resource_id else "",
                     start_time=cmd.start_time, end_time=cmd.end_time)
    async with uow:
        return await uow.tasks.list(flt, limit, offset)


async def get_task(project_id: str, task_id: str, uow: BackupUnitOfWork) -> Task:
    task_id = rules.check_id(task_id, "task_id")
    async with uow:
        return await _task(uow, project_id, task_id)


async def watch_task(project_id: str, task_id: str, make_uow: Callable[[], BackupUnitOfWork],
                     poll_seconds: float = WATCH_POLL_SECONDS) -> AsyncIterator[Task]:
    """Yields the task now and again whenever it changes; ends after it reaches a final status.

    Each poll is its own short transaction, so a long watch holds no connection between polls.
    """
    task = await get_task(project_id, task_id, make_uow())
    yield task
    delay = poll_seconds
    while not task.is_final:
        await asyncio.sleep(delay)
        async with make_uow() as uow:
            latest = await uow.tasks.get(project_id, task.task_id)
        if latest is None:
            return  # the task was purged from the log: nothing more will happen to it
        if latest.watch_key() != task.watch_key():
            task, delay = latest, poll_seconds
            yield task
        else:
            # A quiet task (waiting for a worker) is polled less and less often, up to WATCH_MAX_POLL_SECONDS.
            delay = min(delay * 1.5, WATCH_MAX_POLL_SECONDS)


async def cancel_task(project_id: str, task_id: str, uow: BackupUnitOfWork) -> Task:
    """Cancels a task. A waiting one is undone at once (its job, when a worker takes it, finds it final). A
    running backup or restore is asked to stop: its worker notices at the next heartbeat, undoes it and marks it
    cancelled (watch the task for that). Running deletes, GC and verify run to their end; vault deletes, which
    the vault service starts, cannot be cancelled."""
    task_id = rules.check_id(task_id, "task_id")
    async with uow:
        task = rules.check_cancellable(await _task(uow, project_id, task_id, for_update=True))
        if task.status == lc.WAITING:
            await lifecycle.cancel_in(uow, task)
        else:
            await lifecycle.request_cancel(uow, task)
        await uow.commit()
        task = await _task(uow, project_id, task_id)
    return task


async def _task(uow: BackupUnitOfWork, project_id: str, task_id: str, for_update: bool = False) -> Task:
    task = await uow.tasks.get(project_id, task_id, for_update=for_update)
    if task is None:
        raise errors.TaskNotFoundError(f"task {task_id} not found")
    return task
