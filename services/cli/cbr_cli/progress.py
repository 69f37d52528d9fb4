"""Progress bars fed by TaskService.WatchTask, one per task, until every task reaches a final status; each shows
its percent, bytes, rate and time left (Meter), also for replication records (commands/replication.py)."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
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


class Meter:
    """Rate and time left of one task from what its watcher saw: bytes per second over the last WINDOW seconds
    of observations, else the average since the task started (its started_time); once it ended, the average over
    its run. Time left from the bytes at that rate, else from the percent at the pace so far."""
    WINDOW = 10.0

    def __init__(self):
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def observe(self, now: float, done: int, total: int, percent_done: int, started: float | None,
                ended: float | None) -> tuple[float | None, float | None]:
        """(bytes per second or None, seconds left or None); `now`, `started`, `ended` in Unix seconds."""
        if ended is not None:
            span = ended - started if started is not None else 0.0
            return (done / span if span > 0 and total > 0 else None), 0.0
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
            self._samples.popleft()
        rate = None
        (first_time, first_done), (last_time, last_done) = self._samples[0], self._samples[-1]
        if total > 0 and last_time > first_time and last_done > first_done:
            rate = (last_done - first_done) / (last_time - first_time)
        elif total > 0 and started is not None and now > started and done > 0:
            rate = done / (now - started)
        if rate:
            return rate, max(total - done, 0) / rate
        if started is not None and now > started and 0 < percent_done < 100:
            return None, (now - started) * (100 - percent_done) / percent_done
        return None, None


def seconds_of(stamp) -> float | None:
    return stamp.seconds + stamp.nanos / 1e9 if stamp.seconds or stamp.nanos else None


class BytesColumn(ProgressColumn):
    """'120.0 MiB / 2.0 GiB' once the task knows its total."""

    def render(self, task) -> Text:
        done, total = task.fields.get("bytes_done", 0), task.fields.get("bytes_total", 0)
        return Text(f"{bytes_text(done)} / {bytes_text(total)}" if total else "", style="progress.download")


class RateColumn(ProgressColumn):
    """'48.0 MiB/s'."""

    def render(self, task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{bytes_text(int(rate))}/s" if rate else "", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """'eta 0:01:05' while it runs; nothing once it ended or while nothing says how long."""

    def render(self, task) -> Text:
        left, final = task.fields.get("eta"), task.fields.get("final")
        if final or left is None:
            return Text("")
        return Text(f"eta {dt.timedelta(seconds=round(left))}", style="progress.remaining")


def bar_columns() -> tuple:
    return (TextColumn("{task.description}"), BarColumn(bar_width=24), TextColumn("{task.fields[percent]:>3}%"),
            BytesColumn(), RateColumn(), EtaColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())


def bar_fields(meter: Meter, item, percent_done: int, final: bool) -> dict:
    """The fields of a bar for a task or replication record (both have bytes_done/total, started/ended_time)."""
    rate, left = meter.observe(time.time(), item.bytes_done, item.bytes_total, percent_done,
                               seconds_of(item.started_time), seconds_of(item.ended_time) if final else None)
    return dict(completed=percent_done, percent=percent_done, bytes_done=item.bytes_done,
                bytes_total=item.bytes_total, rate=rate, eta=left, final=final)


async def watch_tasks(tasks: AuthedStub, task_ids: Sequence[str], console: Console,
                      appear_within: float = 0.0, quiet: bool = False) -> list[task_pb2.Task]:
    """Streams each task to its own bar; returns the final tasks in the order of `task_ids`.

    A task another service just started may be recorded a moment later (the backup service learns of a vault
    deletion from its event), so NOT_FOUND is retried for `appear_within` seconds.
    """
    with Progress(*bar_columns(), console=console, disable=quiet) as progress:
        watches = (_watch_one(tasks, task_id, progress, appear_within) for task_id in task_ids)
        return list(await asyncio.gather(*watches))


async def _watch_one(tasks: AuthedStub, task_id: str, progress: Progress, appear_within: float) -> task_pb2.Task:
    bar: TaskID | None = None  # added with the first news of the task, so a failed watch leaves no empty bar
    meter = Meter()
    appear_by = time.monotonic() + appear_within
    retries = 0
    while True:
        try:
            # No deadline: a watch lasts as long as the task; --timeout bounds each unary call.
            async for reply in tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id), timeout=None):
                bar = _show(progress, bar, reply.task, meter)
                appear_by, retries = 0.0, 0  # seen: NOT_FOUND from now on is real
                if reply.task.status in FINAL:
                    return reply.task
            task = (await tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id))).task
            bar = _show(progress, bar, task, meter)
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


def _show(progress: Progress, bar: TaskID | None, task: task_pb2.Task, meter: Meter) -> TaskID:
    operation = enum_of(task, "operation_type") or "task"
    name = task.resource_name or task.vault_name or task.task_id[:8]
    fields = dict(description=f"{operation} {name}", status=enum_of(task, "status"),
                  **bar_fields(meter, task, percent(task), task.status in FINAL))
    if bar is None:
        return progress.add_task(total=100, **fields)
    progress.update(bar, **fields)
    return bar
