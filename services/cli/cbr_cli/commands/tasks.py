"""`cbr task list|get|watch|cancel`, and the --wait that other commands use to follow the tasks they start."""
from __future__ import annotations

from typing import Sequence

from cbr.backup.v1 import task_pb2
from cbr_cli import exit_codes
from cbr_cli.arguments import add_command, add_enum, add_group, add_paging, page, timestamp
from cbr_cli.client import CbrClient
from cbr_cli.output import Column, Output, bytes_text, enum_of, time_text
from cbr_cli.progress import UNSUCCESSFUL, watch_tasks


def _bytes(task: task_pb2.Task) -> str:
    return f"{bytes_text(task.bytes_done)} / {bytes_text(task.bytes_total)}" if task.bytes_total else ""


TASK_COLUMNS = (
    Column("ID", lambda t: t.task_id, is_id=True),
    Column("OPERATION", lambda t: enum_of(t, "operation_type")),
    Column("STATUS", lambda t: enum_of(t, "status")),
    Column("PROGRESS", lambda t: f"{t.progress}%"),
    Column("BYTES", _bytes),
    Column("VAULT", lambda t: t.vault_name or t.vault_id),
    Column("RESOURCE", lambda t: t.resource_name or t.resource_id),
    Column("CREATED", lambda t: time_text(t.created_time)),
    Column("ERROR", lambda t: t.error.code or t.error.message),
)


def register(groups, common) -> None:
    commands = add_group(groups, "task", "the operation log: long work, watchable and cancellable")

    parser = add_command(commands, "list", list_tasks, common, "list tasks, newest first")
    add_enum(parser, "--type", task_pb2.OperationType, dest="operation_type", help="only this operation")
    add_enum(parser, "--status", task_pb2.TaskStatus, help="only tasks in this status")
    parser.add_argument("--vault", default="", metavar="VAULT_ID", help="only tasks of this vault")
    parser.add_argument("--resource", default="", metavar="RESOURCE_ID", help="only tasks of this resource")
    parser.add_argument("--since", type=timestamp, metavar="TIME",
                        help="created at or after (ISO 8601; local time if no offset)")
    parser.add_argument("--until", type=timestamp, metavar="TIME", help="created before (ISO 8601)")
    add_paging(parser)

    parser = add_command(commands, "get", get_task, common, "show one task")
    parser.add_argument("task_id")

    parser = add_command(commands, "watch", watch_task, common,
                         "follow a task with a progress bar until it ends (exit 11 unless it succeeds)")
    parser.add_argument("task_id")

    parser = add_command(commands, "cancel", cancel_task, common, "ask a waiting or running task to stop")
    parser.add_argument("task_id")


async def list_tasks(args, client: CbrClient, out: Output) -> None:
    request = task_pb2.ListTasksRequest(page=page(args), operation_type=args.operation_type, status=args.status,
                                        vault_id=args.vault, resource_id=args.resource,
                                        start_time=args.since, end_time=args.until)
    reply = await client.tasks.ListTasks(request)
    out.many(reply, reply.tasks, TASK_COLUMNS, reply.count)


async def get_task(args, client: CbrClient, out: Output) -> None:
    out.one((await client.tasks.GetTask(task_pb2.GetTaskRequest(task_id=args.task_id))).task)


async def watch_task(args, client: CbrClient, out: Output) -> int:
    return await wait_for(client, out, [args.task_id], just_started=False)


async def cancel_task(args, client: CbrClient, out: Output) -> None:
    out.one((await client.tasks.CancelTask(task_pb2.CancelTaskRequest(task_id=args.task_id))).task)


async def wait_for(client: CbrClient, out: Output, task_ids: Sequence[str], just_started: bool = True) -> int:
    """Progress bars on stderr until every task ends, then the final tasks on stdout; 11 if any did not succeed.

    Tasks `just_started` by this command may take a moment to be recorded; they get one call deadline to appear.
    """
    finals = await watch_tasks(client.tasks, task_ids, out.stderr,
                               appear_within=client.timeout if just_started else 0.0)
    if len(finals) == 1:
        out.one(finals[0])
    else:
        out.many(task_pb2.ListTasksResponse(tasks=finals, count=len(finals)), finals, TASK_COLUMNS)
    unsuccessful = [task for task in finals if task.status in UNSUCCESSFUL]
    for task in unsuccessful:
        code = f" ({task.error.code})" if task.error.code else ""
        out.error(f"task {task.task_id} {enum_of(task, 'status')}{code}: {task.error.message or 'no reason given'}")
    return exit_codes.TASK_UNSUCCESSFUL if unsuccessful else exit_codes.OK
