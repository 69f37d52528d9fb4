"""What a script does with `cbr`, against the real services and a worker: names and -q only (no JSON parsing),
then the same in --json, every answer of one documented shape."""
from __future__ import annotations

import asyncio
import re

from tests.support.services import eventually

WAIT = 90  # seconds a `--wait` of a small backup or restore may take on a busy machine
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ids(stdout: str) -> list[str]:
    """-q output: ids, one a line, nothing else."""
    lines = stdout.splitlines()
    assert lines and all(UUID.fullmatch(line) for line in lines), stdout
    return lines


async def test_scripted_workflow_with_names_and_quiet(cbr):
    [disk] = ids((await cbr.ok("disk", "create", "wf-disk", "--size", "1M", "-q")).stdout)
    [vault] = ids((await cbr.ok("vault", "create", "wf-vault", "--type", "disk", "--size", "1G", "-q")).stdout)
    added = await cbr.ok("vault", "add-resources", "wf-vault", "wf-disk", "-q")
    assert ids(added.stdout) == [disk]
    shown, listed = await asyncio.gather(cbr.ok("vault", "show", "wf-vault", "-q"),
                                         cbr.ok("vault", "list", "--resource", "wf-disk", "-q"))
    assert ids(shown.stdout) == [vault] and ids(listed.stdout) == [vault]

    made = await cbr("backup", "create", "wf-vault", "wf-disk", "--name", "wf-backup", "--wait", "-q", timeout=WAIT)
    assert made.code == 0 and made.stderr == "", str(made)  # quiet: no progress bars, no notes
    [backup] = ids(made.stdout)
    assert ids((await cbr.ok("backup", "list", "--vault", "wf-vault", "-q")).stdout) == [backup]
    restored = await cbr("backup", "restore", "wf-backup", "--wait", "-q", timeout=WAIT)
    assert restored.code == 0 and restored.stderr == "", str(restored)
    [task] = ids(restored.stdout)
    assert ids((await cbr.ok("task", "show", task, "-q")).stdout) == [task]

    deleted = await cbr("vault", "delete", "wf-vault", "--wait", "-q", timeout=WAIT)
    assert deleted.code == 0, str(deleted)
    ids(deleted.stdout)

    async def gone():
        return (await cbr("vault", "show", "wf-vault")).code == 4
    await eventually(gone)


def check_shape(value) -> None:
    """The documented --json shapes: a list is exactly {"items": [...], "count": N}; one thing is a bare object
    with whole ids; an error (on stderr) is {"error": {"code", "message", "exit_code", "details"}}."""
    assert isinstance(value, dict), value
    if "items" in value:
        assert set(value) == {"items", "count"} and isinstance(value["count"], int), value
        for item in value["items"]:
            check_shape(item)
    elif "error" in value:
        assert set(value) == {"error"} and set(value["error"]) == {"code", "message", "exit_code", "details"}
        assert isinstance(value["error"]["details"], dict)
    else:
        found = [v for k, v in value.items() if k.endswith("_id") and isinstance(v, str) and v]
        found += [v for k, vs in value.items() if k.endswith("_ids") for v in vs]
        assert found and all(UUID.fullmatch(v) for v in found if UUID.search(v)), value


async def test_the_same_workflow_in_json(cbr):
    disk = await cbr.json("disk", "create", "js-disk", "--size", "1M")
    vault = await cbr.json("vault", "create", "js-vault", "--type", "disk", "--size", "1G")
    added = await cbr.json("vault", "add-resources", "js-vault", "js-disk")
    made = await cbr("backup", "create", "js-vault", "--name", "js-backup", "--wait", "--json", timeout=WAIT)
    assert made.code == 0, str(made)
    restored = await cbr("backup", "restore", "js-backup", "--wait", "--json", timeout=WAIT)
    assert restored.code == 0, str(restored)
    # The bar's last frame (stderr): percent, bytes and the rate over the task's run.
    assert re.search(r"100% +1\.0 MiB / 1\.0 MiB +[\d.]+ (B|KiB|MiB|GiB)/s", restored.stderr), restored.stderr
    listed = await cbr.json("backup", "list", "--vault", "js-vault")
    deleted = await cbr("vault", "delete", "js-vault", "--wait", "--json", timeout=WAIT)
    assert deleted.code == 0, str(deleted)
    missing = await cbr("vault", "show", "no-such-vault", "--json")

    for value in (disk, vault, added, made.json(), restored.json(), listed, deleted.json()):
        check_shape(value)
    assert added == {"added_resource_ids": [disk["resource_id"]]}
    [backup] = made.json()["items"]
    assert (backup["vault_id"], backup["resource_id"], backup["name"]) == (vault["vault_id"], disk["resource_id"],
                                                                          "js-backup")
    assert listed["items"][0]["backup_id"] == backup["backup_id"]  # ids whole in JSON
    assert restored.json()["status"] == "TASK_STATUS_SUCCESS" and deleted.json()["status"] == "TASK_STATUS_SUCCESS"
    assert missing.code == 4 and missing.stdout == ""
    error = missing.json_err()
    check_shape(error)
    assert error["error"]["code"] == "NOT_FOUND" and error["error"]["exit_code"] == 4
