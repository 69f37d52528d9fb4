"""Progress bars fed by TaskService.WatchTask, one per task, until every task reaches a final status."""
from __future__ import annotations

import asyncio
import time
from typing import Sequence

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from cbr.backup.v1 import task_pb2
from cbr_cli.client import AuthedStub
from cbr_cli.output import bytes_text, enum_of

FINAL = frozenset({task_pb2.TASK_STATUS_SUCCESS, task_pb2.TASK_STATUS_FAILED, task_pb2.TASK_STATUS_TIMEOUT,
                   task_pb2.TASK_STATUS_SKIPPED, task_pb2.TASK_STATUS_CANCELLED})
UNSUCCESSFUL = frozenset({task_pb2.TASK_STATUS_FAILED, task_pb2.TASK_STATUS_TIMEOUT,
                          task_pb2.TASK_STATUS_CANCELLED})
APPEAR_POLL_SECONDS = 0.1
RECONNECTS = 5  # a service restart mid-task should not end the watch; a service that stays down should


class WatchEndedError(Exception):
    """The watch stream kept ending before the task reached a final status."""


def percent(task: task_pb2.Task) -> int:
    """How far a task got, as the CLI shows it: from its bytes when it knows them (its `progress` field is the
    service's own estimate), 100 only for a success, never 100 for anything else."""
    if task.status == task_pb2.TASK_STATUS_SUCCESS:
        return 100
    if task.bytes_total > 0:
        value = task.bytes_done * 100 // task.bytes_total
    else:
        value = task.progress
    return max(0, min(value, 99))


class BytesColumn(ProgressColumn):
    """'120.0 MiB / 2.0 GiB' once the task knows its total."""

    def render(self, task) -> Text:
        done, total = task.fields.get("bytes_done", 0), task.fields.get("bytes_total", 0)
        return Text(f"{bytes_text(done)} / {bytes_text(total)}" if total else "", style="progress.download")


async def watch_tasks(tasks: AuthedStub, task_ids: Sequence[str], console: Console,
                      appear_within: float = 0.0) -> list[task_pb2.Task]:
    """Streams each task to its own bar; returns the final tasks in the order of `task_ids`.

    A task another service just started may be recorded a moment later (the backup service learns of a vault
    deletion from its event), so NOT_FOUND is retried for `appear_within` seconds.
    """
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:>3.0f}%"), BytesColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        watches = (_watch_one(tasks, task_id, progress, appear_within) for task_id in task_ids)
        return list(await asyncio.gather(*watches))


async def _watch_one(tasks: AuthedStub, task_id: str, progress: Progress, appear_within: float) -> task_pb2.Task:
    bar: TaskID | None = None  # added with the first news of the task, so a failed watch leaves no empty bar
    appear_by = time.monotonic() + appear_within
    retries = 0
    while True:
        try:
            # No deadline: a watch lasts as long as the task; --timeout bounds each unary call.
            async for reply in tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id), timeout=None):
                bar = _show(progress, bar, reply.task)
                appear_by, retries = 0.0, 0  # seen: NOT_FOUND from now on is real
                if reply.task.status in FINAL:
                    return reply.task
            task = (await tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id))).task
            bar = _show(progress, bar, task)
            if task.status in FINAL:
                return task
            error: Exception = WatchEndedError(f"the watch of task {task_id} kept ending before the task did")
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < appear_by:
                await asyncio.sleep(APPEAR_POLL_SECONDS)
                continue
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            error = exc
        retries += 1
        if retries > RECONNECTS:
            raise error
        await asyncio.sleep(min(0.25 * 2 ** retries, 5.0))


def _show(progress: Progress, bar: TaskID | None, task: task_pb2.Task) -> TaskID:
    operation = enum_of(task, "operation_type") or "task"
    name = task.resource_name or task.vault_name or task.task_id[:8]
    fields = dict(completed=percent(task), description=f"{operation} {name}", status=enum_of(task, "status"),
                  bytes_done=task.bytes_done, bytes_total=task.bytes_total)
    if bar is None:
        return progress.add_task(total=100, **fields)
    progress.update(bar, **fields)
    return bar
