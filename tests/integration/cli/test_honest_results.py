"""What `cbr` says is what happened, against the real services: a backup that skipped resources is not a success,
a first backup shows as full, --json has one shape per kind of result, refusals name the flags typed."""
from __future__ import annotations

import asyncio
import json

from tests.integration.cli.conftest import one_error_line

BACKUP_WAIT = 60  # seconds a `--wait` of a small backup may take on a busy machine
LIST_COMMANDS = (("vault", "list"), ("disk", "list"), ("server", "list"), ("file-system", "list"), ("backup", "list"),
                 ("task", "list"), ("policy", "list"), ("policy", "list-ticks"), ("vault", "list-project-tags"))


def rows(table: str) -> list[list[str]]:
    """The rows of a printed table, split on white space (header, rule and count line left out)."""
    return [line.split() for line in table.splitlines()[2:] if line.strip() and " in all" not in line]


async def test_first_backup_shows_full_and_each_shows_what_it_added(cbr):
    disk = await cbr.json("disk", "create", "honest", "--size", "1M")
    vault = await cbr.json("vault", "create", "honest-vault", "--type", "disk", "--size", "1G",
                           "--resource", disk["resource_id"])
    first = await cbr("backup", "create", vault["vault_id"], "--wait", timeout=BACKUP_WAIT)
    second = await cbr("backup", "create", vault["vault_id"], "--wait", timeout=BACKUP_WAIT)
    for result in (first, second):
        assert result.code == 0, str(result)
        assert result.stdout.splitlines()[0].split() == ["ID", "NAME", "VAULT", "RESOURCE", "TYPE", "STATUS", "SIZE",
                                                         "STORED", "ADDED", "INCR", "CREATED"]
    [first_row], [second_row] = rows(first.stdout), rows(second.stdout)
    assert first_row[12] == "no", first.stdout  # nothing to compare with: a full read, whatever was asked
    for row in (first_row, second_row):  # the table says what the backup says
        backup = await cbr.json("backup", "show", row[0])
        assert row[12] == ("yes" if backup["incremental"] else "no")  # row[0]: a short id, which resolves
        assert backup["status"] == "BACKUP_STATUS_AVAILABLE" and "added_bytes" in backup
    listed = await cbr.ok("backup", "list", "--vault", vault["vault_id"])
    assert listed.stdout.splitlines()[0].split()[7:9] == ["STORED", "ADDED"]


async def test_a_backup_that_skips_resources_exits_non_zero(cbr):
    """A server whose every disk is excluded is skipped: alone, nothing is backed up; beside another server (every
    resource of the vault, the default even with --exclude), that one is backed up and the skip still ends the
    command with 12, both printed."""
    disks = [d["resource_id"] for d in await asyncio.gather(
        *(cbr.json("disk", "create", f"skip-{i}", "--size", "1M") for i in range(3)))]
    skipped_server, kept_server = await asyncio.gather(cbr.json("server", "create", "all-out", disks[0], disks[1]),
                                                       cbr.json("server", "create", "kept", disks[2]))
    skipped_id, kept_id = skipped_server["resource_id"], kept_server["resource_id"]
    vault = await cbr.json("vault", "create", "skips", "--type", "server", "--size", "1G",
                           "--resource", skipped_id, "--resource", kept_id)
    exclude = ("--exclude", f"{skipped_id}={disks[0]},{disks[1]}")

    nothing = await cbr("backup", "create", vault["vault_id"], skipped_id, *exclude, "--wait", timeout=BACKUP_WAIT)
    assert nothing.code == 12, str(nothing)
    skipped_line = f"skipped server all-out ({skipped_id}): every disk of server {skipped_id} is excluded"
    assert skipped_line in nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == (
        "error: nothing backed up: every resource was skipped (1, see above)")
    assert rows(nothing.stdout) == []

    some = await cbr("backup", "create", vault["vault_id"], *exclude, "--wait", "--json", timeout=BACKUP_WAIT)
    assert some.code == 12, str(some)
    error = json.loads(some.stderr.strip().splitlines()[-1])["error"]  # under --json, errors are JSON
    assert skipped_line in some.stderr and error["message"].startswith("1 of 2 resources skipped (see above); 1 backed")
    assert (error["code"], error["exit_code"]) == ("SKIPPED", 12)
    assert [s["resource_id"] for s in error["details"]["skipped"]] == [skipped_id]
    made = some.json()
    assert made["count"] == 1 and made["items"][0]["resource_id"] == kept_id
    assert made["items"][0]["status"] == "BACKUP_STATUS_AVAILABLE"


async def test_json_has_one_shape_per_kind_of_result(cbr):
    lists = await asyncio.gather(*(cbr.json(*command) for command in LIST_COMMANDS))
    for command, reply in zip(LIST_COMMANDS, lists):
        assert reply == {"items": [], "count": 0}, command

    disks = await asyncio.gather(*(cbr.json("disk", "create", f"shape-{i}", "--size", "1M") for i in range(2)))
    one_of_two, one, shown = await asyncio.gather(cbr.json("disk", "list", "--limit", "1"),
                                                  cbr.json("disk", "list", "--name", "shape-0"),
                                                  cbr.json("disk", "show", disks[0]["resource_id"]))
    assert one_of_two["count"] == 2 and len(one_of_two["items"]) == 1  # count: every match, paging aside
    assert one == {"items": [disks[0]], "count": 1}  # one result is still a list
    assert shown == disks[0]  # one thing is the bare object
    helped = await cbr.ok("--help")
    assert '{"items": [...], "count": N}' in helped.stdout


async def test_refusals_name_the_flags_typed(cbr):
    vault = await cbr.json("vault", "create", "flags", "--type", "disk", "--size", "1G")
    too_big, bare, by_name, old_flag, file_system = await asyncio.gather(
        cbr("vault", "create", "huge", "--type", "disk", "--size", "20000T"),
        cbr("vault", "create", "bare", "--type", "disk", "--size", "100"),
        cbr("vault", "add-resources", vault["vault_id"], "my-disk"),
        cbr.json("vault", "create", "old", "--type", "turbo", "--size-gb", "2"),
        cbr.json("vault", "create", "fs", "--type", "file-system", "--size", "1T"))
    assert too_big.code == 3 and one_error_line(too_big).endswith("--size (in GiB) must be 1..10485760, got 20480000")
    assert bare.code == 2 and "argument --size: a vault's capacity is a whole number of GiB" in bare.stderr
    assert "(a bare number is bytes)" in bare.stderr
    assert by_name.code == 4 and "no disk, server or file system named 'my-disk'" in one_error_line(by_name)
    assert (old_flag["object_type"], old_flag["size_gb"]) == ("OBJECT_TYPE_TURBO", "2")
    assert (file_system["object_type"], file_system["size_gb"]) == ("OBJECT_TYPE_TURBO", "1024")
    table = await cbr.ok("vault", "list", "--type", "file_system")
    assert sorted(row[2] for row in rows(table.stdout)) == ["file_system", "file_system"]


async def test_old_spellings_still_work_but_are_not_shown(cbr):
    old_lists = await asyncio.gather(cbr.json("fs", "list"), cbr.json("policy", "ticks"),
                                     cbr.json("vault", "project-tags"))
    assert old_lists == [{"items": [], "count": 0}] * 3
    file_system = await cbr.json("fs", "define", "old-share")
    disk = await cbr.json("disk", "create", "old-disk", "--size", "1M")
    server, shown = await asyncio.gather(cbr.json("server", "define", "old-server", disk["resource_id"]),
                                         cbr.json("file-system", "get", file_system["resource_id"]))
    assert shown == file_system and server["disks"][0]["disk_id"] == disk["resource_id"]
    top, backup, vault, file_systems = await asyncio.gather(
        cbr.ok("--help"), cbr.ok("backup", "--help"), cbr.ok("vault", "--help"), cbr.ok("file-system", "--help"))
    listed = {line.split()[0] for result in (top, backup, vault, file_systems)
              for line in result.stdout.splitlines() if line.startswith("    ") and line[4] != " "}
    assert {"file-system", "create", "show", "show-checkpoint", "list-tags", "add-tags"} <= listed
    assert not listed & {"fs", "checkpoint", "get", "get-checkpoint", "define", "tags", "tag", "untag"}
