"""`cbr task list|show|watch|cancel`, and the --wait that other commands use to follow the tasks they start."""
from __future__ import annotations

from typing import Sequence

from cbr.backup.v1 import task_pb2
from cbr_cli import exit_codes
from cbr_cli.arguments import RESOURCE_ID, TASK_ID, VAULT_ID, add_command, add_enum, add_group, add_paging, page, \
    timestamp
from cbr_cli.client import CbrClient
from cbr_cli.errors import LIST_FILTERS
from cbr_cli.output import Column, Output, bytes_text, enum_of, time_text
from cbr_cli.progress import UNSUCCESSFUL, percent, watch_tasks
from cbr_cli.resolve import short_id


def _bytes(task: task_pb2.Task) -> str:
    return f"{bytes_text(task.bytes_done)} / {bytes_text(task.bytes_total)}" if task.bytes_total else ""


TASK_COLUMNS = (
    Column("ID", lambda t: t.task_id, is_id=True),
    Column("OPERATION", lambda t: enum_of(t, "operation_type")),
    Column("STATUS", lambda t: enum_of(t, "status")),
    Column("PROGRESS", lambda t: f"{percent(t)}%"),
    Column("BYTES", _bytes),
    Column("VAULT", lambda t: t.vault_name or short_id(t.vault_id), is_name=True),
    Column("RESOURCE", lambda t: t.resource_name or short_id(t.resource_id), is_name=True),
    Column("CREATED", lambda t: time_text(t.created_time, minutes=True)),
    Column("ERROR", lambda t: t.error.code or t.error.message, is_name=True),
)


def register(groups, common) -> None:
    commands = add_group(groups, "task", "the operation log: long work, watchable and cancellable")

    parser = add_command(commands, "list", list_tasks, common, "list tasks, newest first", fields=LIST_FILTERS)
    add_enum(parser, "--type", task_pb2.OperationType, dest="operation_type", help="only this operation")
    add_enum(parser, "--status", task_pb2.TaskStatus, help="only tasks in this status")
    parser.add_argument("--vault", type=VAULT_ID, metavar="VAULT_ID", help="only tasks of this vault")
    parser.add_argument("--resource", type=RESOURCE_ID, metavar="RESOURCE_ID",
                        help="only tasks of this resource")
    parser.add_argument("--since", type=timestamp, metavar="TIME",
                        help="created at or after (ISO 8601; local time if no offset)")
    parser.add_argument("--until", type=timestamp, metavar="TIME", help="created before (ISO 8601)")
    add_paging(parser)

    parser = add_command(commands, "show", show_task, common, "show one task", aliases=("get",))
    parser.add_argument("task_id", type=TASK_ID, metavar="TASK_ID")

    parser = add_command(commands, "watch", watch_task, common,
                         "follow a task with a progress bar until it ends (exit 11 unless it succeeds)")
    parser.add_argument("task_id", type=TASK_ID, metavar="TASK_ID")

    parser = add_command(commands, "cancel", cancel_task, common, "ask a waiting or running task to stop")
    parser.add_argument("task_id", type=TASK_ID, metavar="TASK_ID")


async def list_tasks(args, client: CbrClient, out: Output) -> None:
    request = task_pb2.ListTasksRequest(page=page(args), operation_type=args.operation_type, status=args.status,
                                        vault_id=args.vault, resource_id=args.resource,
                                        start_time=args.since, end_time=args.until)
    reply = await client.tasks.ListTasks(request)
    out.many(reply.tasks, TASK_COLUMNS, reply.count)


def print_task(out: Output, task: task_pb2.Task) -> None:
    """One task; its progress as the progress bars show it (see progress.percent), not the raw field."""
    if out.as_json:
        return out.json(task)
    shown = task_pb2.Task()
    shown.CopyFrom(task)
    shown.progress = percent(task)
    out.one(shown)


async def show_task(args, client: CbrClient, out: Output) -> None:
    print_task(out, (await client.tasks.GetTask(task_pb2.GetTaskRequest(task_id=args.task_id))).task)


async def watch_task(args, client: CbrClient, out: Output) -> int:
    return await wait_for(client, out, args.task_id, just_started=False)


async def cancel_task(args, client: CbrClient, out: Output) -> None:
    print_task(out, (await client.tasks.CancelTask(task_pb2.CancelTaskRequest(task_id=args.task_id))).task)


async def wait_for(client: CbrClient, out: Output, task_id: str, just_started: bool = True) -> int:
    """Progress bars on stderr until the task ends, then the final task on stdout; 11 unless it succeeded.

    A task `just_started` by this command may take a moment to be recorded; it gets one call deadline to appear.
    """
    [task] = await watch_until_done(client, out, [task_id], just_started)
    print_task(out, task)
    return exit_codes.TASK_UNSUCCESSFUL if report_unsuccessful(out, [task]) else exit_codes.OK


async def watch_until_done(client: CbrClient, out: Output, task_ids: Sequence[str],
                           just_started: bool = True) -> list[task_pb2.Task]:
    """Progress bars on stderr until every task ends; the final tasks, in the order of `task_ids`."""
    return await watch_tasks(client.tasks, task_ids, out.stderr,
                             appear_within=client.timeout if just_started else 0.0, quiet=out.quiet)


def report_unsuccessful(out: Output, tasks: Sequence[task_pb2.Task]) -> bool:
    """An error line for each task that failed, was cancelled or timed out; whether there was one."""
    unsuccessful = [task for task in tasks if task.status in UNSUCCESSFUL]
    for task in unsuccessful:
        code = f" ({task.error.code})" if task.error.code else ""
        out.error(f"task {task.task_id} {enum_of(task, 'status')}{code}: {task.error.message or 'no reason given'}",
                  "TASK_UNSUCCESSFUL", exit_codes.TASK_UNSUCCESSFUL,
                  {"task_id": task.task_id, "status": task_pb2.TaskStatus.Name(task.status),
                   "cbr_code": task.error.code})
    return bool(unsuccessful)
