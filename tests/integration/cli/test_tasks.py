"""`cbr task` against the real task service, on the vault_delete tasks that deleting vaults records."""
from __future__ import annotations

import asyncio
import uuid

from tests.integration.cli.conftest import one_error_line


async def deleted_vault_task(cbr) -> dict:
    vault = await cbr.json("vault", "create", "doomed", "--type", "disk", "--size", "1G")
    watched = await cbr.json("vault", "delete", vault["vault_id"], "--wait")  # --json: the final task on stdout
    assert watched["status"] == "TASK_STATUS_SUCCESS" and watched["vault_id"] == vault["vault_id"]
    return watched


async def test_list_get_watch(cbr):
    task = await deleted_vault_task(cbr)
    task_id = task["task_id"]

    table, filtered, backups, future, shown, as_json, watched = await asyncio.gather(
        cbr.ok("task", "list"),
        cbr.json("task", "list", "--type", "vault_delete", "--status", "success", "--vault", task["vault_id"]),
        cbr.json("task", "list", "--type", "backup"),
        cbr.json("task", "list", "--since", "2999-01-01"),
        cbr.ok("task", "show", task_id),
        cbr.json("task", "show", task_id),
        cbr.ok("task", "watch", task_id))
    header, _, row, *_ = table.stdout.splitlines()
    assert header.split()[:4] == ["ID", "OPERATION", "STATUS", "PROGRESS"]
    assert row.split()[:4] == [task_id[:8], "vault_delete", "success", "100%"], table.stdout
    assert [t["task_id"] for t in filtered["items"]] == [task_id]
    assert backups["count"] == 0 and future["count"] == 0
    assert "vault_delete" in shown.stdout and "fail_count=0" in shown.stdout
    assert as_json == task
    assert "success" in watched.stdout and "100%" in watched.stderr


async def test_unknown_and_finished_tasks(cbr):
    missing, malformed, task = await asyncio.gather(cbr("task", "watch", str(uuid.uuid4())),
                                                    cbr("task", "show", "not-a-uuid"), deleted_vault_task(cbr))
    assert missing.code == 4 and one_error_line(missing).startswith("error: NOT_FOUND")
    assert malformed.code == 2 and "argument TASK_ID: expected a task id (a UUID" in malformed.stderr
    finished = await cbr("task", "cancel", task["task_id"])
    assert finished.code == 6 and one_error_line(finished).startswith("error: FAILED_PRECONDITION")
