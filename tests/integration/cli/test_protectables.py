"""`cbr disk|server|fs` against the real backup service: tables, --json, sizes with suffixes, exit codes."""
from __future__ import annotations

import asyncio
import uuid

from tests.integration.cli.conftest import one_error_line

MIB = 1024 * 1024


async def test_disk_create_list_get_resize_delete(cbr):
    created, disk = await asyncio.gather(cbr.ok("disk", "create", "disk-a", "--size", "8M"),
                                         cbr.json("disk", "create", "disk-b", "--size", "4194304"))
    assert "disk-a" in created.stdout and "8.0 MiB (8388608 bytes)" in created.stdout
    assert disk["name"] == "disk-b" and disk["size_bytes"] == str(4 * MIB) and disk["type"] == "OBJECT_TYPE_DISK"

    table, listed, first = await asyncio.gather(
        cbr.ok("disk", "list"), cbr.json("disk", "list", "--name", "disk-"),
        cbr.ok("--json", "disk", "list", "--limit", "1"))  # global options go before the command as well
    header, _, *rows, count = table.stdout.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "STATUS", "SIZE"]
    assert any(disk["resource_id"][:8] in row and "disk-b" in row and "4.0 MiB" in row for row in rows), table.stdout
    assert count == "2 in all"
    assert listed["count"] == 2 and {p["name"] for p in listed["items"]} == {"disk-a", "disk-b"}
    assert first.json()["count"] == 2 and len(first.json()["items"]) == 1

    grown = await cbr.json("disk", "update", disk["resource_id"], "--size", "0.5G")
    assert grown["size_bytes"] == str(512 * MIB)

    assert (await cbr.ok("disk", "delete", disk["resource_id"])).stdout.startswith("deleted disk")
    gone = await cbr("disk", "show", disk["resource_id"])
    assert gone.code == 4 and one_error_line(gone).startswith("error: NOT_FOUND")


async def test_server_and_file_system(cbr):
    *created, fs = await asyncio.gather(*(cbr.json("disk", "create", f"d{i}", "--size", "1M") for i in range(2)),
                                        cbr.json("file-system", "create", "share"))
    disks = [d["resource_id"] for d in created]
    server = await cbr.json("server", "create", "srv", *disks)
    assert [d["disk_id"] for d in server["disks"]] == disks
    shown, servers, attached, busy, file_systems = await asyncio.gather(
        cbr.ok("server", "show", server["resource_id"]), cbr.ok("server", "list"),
        cbr.json("disk", "list", "--server", server["resource_id"]), cbr("disk", "delete", disks[0]),
        cbr.ok("file-system", "list"))
    assert "disks" in shown.stdout and "vda" in shown.stdout and disks[1] in shown.stdout
    assert server["resource_id"][:8] in servers.stdout
    assert attached["count"] == 2 and {p["status"] for p in attached["items"]} == {"PROTECTABLE_STATUS_IN_USE"}
    assert busy.code == 6 and "FAILED_PRECONDITION" in one_error_line(busy)
    assert fs["type"] == "OBJECT_TYPE_TURBO" and "share" in file_systems.stdout

    await asyncio.gather(cbr.ok("server", "delete", server["resource_id"]),
                         cbr.ok("file-system", "delete", fs["resource_id"]))
    assert (await cbr.json("file-system", "list"))["count"] == 0
    assert {p["status"] for p in (await cbr.json("disk", "list"))["items"]} == {"PROTECTABLE_STATUS_AVAILABLE"}


async def test_bad_sizes(cbr):
    unparsable, missing, refused, unknown = await asyncio.gather(
        cbr("disk", "create", "d", "--size", "12X"),
        cbr("disk", "create", "d"),
        cbr("disk", "create", "d", "--size", "1000"),  # not a multiple of 512
        cbr("disk", "update", str(uuid.uuid4()), "--size", "1G"))
    assert unparsable.code == 2 and "not a size" in unparsable.stderr
    assert missing.code == 2 and "--size" in missing.stderr
    assert refused.code == 3 and one_error_line(refused).startswith("error: INVALID_ARGUMENT")
    assert unknown.code == 4
