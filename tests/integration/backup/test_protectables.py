"""ProtectableService through real gRPC: disks as sparse pool files, servers as ordered groups of disks, file
systems as folders; every bad input with its code, and nothing written (rows or files) when a call is refused."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
import pytest

from cbr.backup.v1 import protectable_pb2 as pp
from cbr.common.v1 import common_pb2 as cp
from tests.support.calls import DISK, MIB, SERVER, TURBO, create_disk, create_server, expect_error

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED, DENIED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
AVAILABLE, IN_USE = pp.PROTECTABLE_STATUS_AVAILABLE, pp.PROTECTABLE_STATUS_IN_USE
TIB = 1024 ** 4


def pool_folder(services, caller) -> Path:
    return Path(services.runtimes["backup"].settings.pool_dir).absolute() / caller.project_id


def fs_folder(services, caller) -> Path:
    return Path(services.runtimes["backup"].settings.fs_root).absolute() / caller.project_id


def entries(folder: Path) -> dict[str, int]:
    """Name -> size of what a project's provider folder holds (nothing if the folder was never made)."""
    if not folder.exists():
        return {}
    return {p.name: p.stat().st_size for p in folder.iterdir()}


async def listed(caller, object_type=DISK, **fields) -> pp.ListProtectablesResponse:
    return await caller.protectables.ListProtectables(pp.ListProtectablesRequest(type=object_type, **fields))


async def listed_ids(caller, object_type=DISK, **fields) -> list[str]:
    return [p.resource_id for p in (await listed(caller, object_type, **fields)).protectables]


async def get(caller, object_type, resource_id: str) -> pp.Protectable:
    return (await caller.protectables.GetProtectable(pp.GetProtectableRequest(
        type=object_type, resource_id=resource_id))).protectable


async def define_server(caller, name: str, disk_ids) -> pp.Protectable:
    return (await caller.protectables.DefineServer(pp.DefineServerRequest(name=name, disk_ids=disk_ids))).server


async def define_fs(caller, name: str = "share") -> pp.Protectable:
    return (await caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name=name))).file_system


# Disks


async def test_create_disk_is_a_sparse_pool_file(services, caller):
    disk = await create_disk(caller, "Data_disk-01.a", size_bytes=8 * MIB)
    assert uuid.UUID(disk.resource_id)
    assert (disk.name, disk.project_id, disk.type, disk.resource_type) == (
        "Data_disk-01.a", caller.project_id, DISK, "OS::Cinder::Volume")
    assert (disk.status, disk.size_bytes, disk.server_id, list(disk.disks)) == (AVAILABLE, 8 * MIB, "", [])
    assert disk.path == str(pool_folder(services, caller) / f"{disk.resource_id}.raw")
    assert disk.created_time.seconds > 0
    info = os.stat(disk.path)
    assert info.st_size == 8 * MIB and info.st_blocks == 0
    assert await get(caller, DISK, disk.resource_id) == disk
    assert await get(caller, DISK, disk.resource_id.upper()) == disk  # ids are UUIDs in any case
    assert entries(pool_folder(services, caller)) == {f"{disk.resource_id}.raw": 8 * MIB}


async def test_smallest_disk_and_longest_name(caller):
    disk = await create_disk(caller, "n" * 64, size_bytes=512)
    assert (disk.name, disk.size_bytes) == ("n" * 64, 512)
    assert os.stat(disk.path).st_size == 512


async def test_disk_of_64_tib_is_a_legal_size(services, caller):
    """The size rule takes 64 TiB; the pool's file system may still refuse it (ext4 stops at 16 TiB)."""
    try:
        disk = await create_disk(caller, "huge", size_bytes=64 * TIB)
    except grpc.aio.AioRpcError as error:
        await expect_error(_raise(error), EXHAUSTED, "BackupService.6560")
        assert (await listed(caller)).count == 0
        assert entries(pool_folder(services, caller)) == {}
    else:
        assert disk.size_bytes == 64 * TIB and os.stat(disk.path).st_blocks == 0


async def _raise(error):
    raise error


BAD_DISKS = {
    "empty name": (dict(name=""), "BackupService.6501"),
    "65-char name": (dict(name="a" * 65), "BackupService.6501"),
    "slash in name": (dict(name="a/b"), "BackupService.6501"),
    "dot-dot path as name": (dict(name="../../etc/passwd"), "BackupService.6501"),
    "newline at the end": (dict(name="disk\n"), "BackupService.6501"),
    "space in name": (dict(name="my disk"), "BackupService.6501"),
    "non-ascii name": (dict(name="disk\u00e9"), "BackupService.6501"),
    "size 0": (dict(size_bytes=0), "BackupService.6502"),
    "negative size": (dict(size_bytes=-512), "BackupService.6502"),
    "size not a multiple of 512": (dict(size_bytes=MIB + 1), "BackupService.6502"),
    "size above 64 TiB": (dict(size_bytes=64 * TIB + 512), "BackupService.6502"),
    "largest int64": (dict(size_bytes=2 ** 63 - 1), "BackupService.6502"),
}


@pytest.mark.parametrize("case", list(BAD_DISKS))
async def test_create_disk_rejects_bad_input_and_writes_nothing(services, caller, case):
    fields, cbr_code = BAD_DISKS[case]
    request = dict(name="ok", size_bytes=MIB)
    request.update(fields)
    error = await expect_error(caller.protectables.CreateDisk(pp.CreateDiskRequest(**request)), INVALID, cbr_code)
    assert error.details()
    assert (await listed(caller)).count == 0
    assert entries(pool_folder(services, caller)) == {}


async def test_resize_grows_the_file_and_keeps_its_data(caller):
    disk = await create_disk(caller, size_bytes=MIB)
    fd = os.open(disk.path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"head-of-disk", 0)
        os.pwrite(fd, b"tail", MIB - 4)
    finally:
        os.close(fd)

    resized = (await caller.protectables.ResizeDisk(pp.ResizeDiskRequest(
        disk_id=disk.resource_id, new_size_bytes=4 * MIB))).disk
    assert (resized.resource_id, resized.size_bytes, resized.status, resized.path) == (
        disk.resource_id, 4 * MIB, AVAILABLE, disk.path)
    assert (await get(caller, DISK, disk.resource_id)).size_bytes == 4 * MIB
    assert os.stat(disk.path).st_size == 4 * MIB
    with open(disk.path, "rb") as f:
        data = f.read()
    assert data[:12] == b"head-of-disk" and data[MIB - 4:MIB] == b"tail"
    assert data[MIB:] == bytes(3 * MIB)


async def test_resizing_an_attached_disk_grows_its_server(caller):
    server = await create_server(caller, "web", disks=2)
    first = server.disks[0].disk_id
    await caller.protectables.ResizeDisk(pp.ResizeDiskRequest(disk_id=first, new_size_bytes=16 * MIB))
    got = await get(caller, SERVER, server.resource_id)
    assert got.size_bytes == server.size_bytes + 8 * MIB
    assert [(d.disk_id, d.size_bytes, d.device) for d in got.disks][0] == (first, 16 * MIB, "vda")
    assert (await get(caller, DISK, first)).status == IN_USE


async def test_resize_rejections_change_nothing(services, caller):
    disk = await create_disk(caller, size_bytes=8 * MIB)
    stranger = services.caller()
    theirs = await create_disk(stranger, "theirs", size_bytes=8 * MIB)
    cases = [
        (disk.resource_id, 8 * MIB, INVALID, "BackupService.6503"),        # same size
        (disk.resource_id, 4 * MIB, INVALID, "BackupService.6503"),        # smaller
        (disk.resource_id, 0, INVALID, "BackupService.6502"),
        (disk.resource_id, -MIB, INVALID, "BackupService.6502"),
        (disk.resource_id, 16 * MIB + 100, INVALID, "BackupService.6502"),
        (disk.resource_id, 64 * TIB + 512, INVALID, "BackupService.6502"),
        ("../x", 16 * MIB, INVALID, "BackupService.6504"),
        ("", 16 * MIB, INVALID, "BackupService.6504"),
        (str(uuid.uuid4()), 16 * MIB, NOT_FOUND, "BackupService.6521"),
        (theirs.resource_id, 16 * MIB, NOT_FOUND, "BackupService.6521"),    # another project's disk
    ]
    for disk_id, size, code, cbr_code in cases:
        await expect_error(caller.protectables.ResizeDisk(pp.ResizeDiskRequest(
            disk_id=disk_id, new_size_bytes=size)), code, cbr_code)
    assert (await get(caller, DISK, disk.resource_id)).size_bytes == 8 * MIB
    assert os.stat(disk.path).st_size == 8 * MIB
    assert (await get(stranger, DISK, theirs.resource_id)).size_bytes == 8 * MIB
    assert os.stat(theirs.path).st_size == 8 * MIB


async def test_delete_disk_removes_row_and_file(services, caller):
    keep, gone = await create_disk(caller, "keep"), await create_disk(caller, "gone")
    await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=gone.resource_id))
    assert not os.path.exists(gone.path) and os.path.exists(keep.path)
    assert await listed_ids(caller) == [keep.resource_id]
    await expect_error(get(caller, DISK, gone.resource_id), NOT_FOUND, "BackupService.6521")
    await expect_error(caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=gone.resource_id)),
                       NOT_FOUND, "BackupService.6521")
    assert entries(pool_folder(services, caller)) == {f"{keep.resource_id}.raw": keep.size_bytes}


async def test_delete_disk_rejections_change_nothing(services, caller):
    disk = await create_disk(caller, "free")
    server = await create_server(caller, "web", disks=1)
    attached = server.disks[0].disk_id
    theirs = await create_disk(services.caller(), "theirs")
    cases = [
        (attached, FAILED, "BackupService.7003"),
        ("../x", INVALID, "BackupService.6504"),
        ("", INVALID, "BackupService.6504"),
        (str(uuid.uuid4()), NOT_FOUND, "BackupService.6521"),
        (theirs.resource_id, NOT_FOUND, "BackupService.6521"),
    ]
    before = entries(pool_folder(services, caller))
    for disk_id, code, cbr_code in cases:
        await expect_error(caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk_id)), code, cbr_code)
    assert entries(pool_folder(services, caller)) == before and len(before) == 2
    assert os.path.exists(theirs.path)
    assert (await listed(caller)).count == 2
    still = await get(caller, DISK, attached)
    assert (still.status, still.server_id) == (IN_USE, server.resource_id)
    assert (await get(caller, DISK, disk.resource_id)).status == AVAILABLE


# Listing and getting


async def test_list_disks_filters_and_paging(caller):
    made = [await create_disk(caller, f"data-{i}") for i in range(4)]
    underscore, lookalike = await create_disk(caller, "log_0"), await create_disk(caller, "logx0")
    server = await define_server(caller, "web", [made[0].resource_id, made[1].resource_id])
    every_id = [d.resource_id for d in (*made, underscore, lookalike)]

    everything = await listed(caller)
    assert everything.count == 6 and [p.resource_id for p in everything.protectables] == every_id
    page = await listed(caller, page=cp.PageRequest(limit=2, offset=1))
    assert page.count == 6 and [p.resource_id for p in page.protectables] == every_id[1:3]
    past_end = await listed(caller, page=cp.PageRequest(limit=5, offset=50))
    assert past_end.count == 6 and list(past_end.protectables) == []
    assert (await listed(caller, page=cp.PageRequest(limit=1000))).count == 6

    assert await listed_ids(caller, resource_id=made[2].resource_id) == [made[2].resource_id]
    assert await listed_ids(caller, resource_id=str(uuid.uuid4())) == []
    assert (await listed(caller, name="data-")).count == 4
    assert await listed_ids(caller, name="log_") == [underscore.resource_id]  # '_' is no wildcard
    assert await listed_ids(caller, name="%") == []
    in_use = await listed(caller, status=IN_USE)
    assert [p.resource_id for p in in_use.protectables] == every_id[:2]
    assert {p.server_id for p in in_use.protectables} == {server.resource_id}
    assert await listed_ids(caller, status=AVAILABLE) == every_id[2:]
    assert await listed_ids(caller, server_id=server.resource_id) == every_id[:2]
    assert await listed_ids(caller, server_id=str(uuid.uuid4())) == []
    assert await listed_ids(caller, status=AVAILABLE, name="data-") == every_id[2:4]
    assert await listed_ids(caller, status=pp.PROTECTABLE_STATUS_ERROR) == []


async def test_list_servers_and_file_systems_filters_and_paging(caller):
    servers = [await create_server(caller, f"srv-{i}", disks=1) for i in range(3)]
    shares = [await define_fs(caller, f"share-{i}") for i in range(2)]
    server_ids, share_ids = [s.resource_id for s in servers], [f.resource_id for f in shares]

    everything = await listed(caller, SERVER)
    assert everything.count == 3 and [p.resource_id for p in everything.protectables] == server_ids
    assert list(everything.protectables) == [await get(caller, SERVER, i) for i in server_ids]
    page = await listed(caller, SERVER, page=cp.PageRequest(limit=1, offset=2))
    assert page.count == 3 and [p.resource_id for p in page.protectables] == server_ids[2:]
    assert await listed_ids(caller, SERVER, resource_id=server_ids[1]) == [server_ids[1]]
    assert await listed_ids(caller, SERVER, server_id=server_ids[0]) == [server_ids[0]]
    assert await listed_ids(caller, SERVER, name="srv-2") == [server_ids[2]]
    assert await listed_ids(caller, SERVER, status=AVAILABLE) == server_ids
    assert await listed_ids(caller, SERVER, status=IN_USE) == []

    fs_list = await listed(caller, TURBO)
    assert fs_list.count == 2 and [p.resource_id for p in fs_list.protectables] == share_ids
    page = await listed(caller, TURBO, page=cp.PageRequest(limit=1, offset=1))
    assert page.count == 2 and [p.resource_id for p in page.protectables] == share_ids[1:]
    assert await listed_ids(caller, TURBO, resource_id=share_ids[0]) == [share_ids[0]]
    assert await listed_ids(caller, TURBO, name="-1") == [share_ids[1]]
    assert await listed_ids(caller, TURBO, status=AVAILABLE) == share_ids
    assert await listed_ids(caller, TURBO, status=IN_USE) == []
    assert await listed_ids(caller, TURBO, server_id=server_ids[0]) == []
    # Each kind lists only itself.
    assert (await listed(caller, DISK)).count == 3
    assert share_ids[0] not in await listed_ids(caller, SERVER, resource_id=share_ids[0])


async def test_list_and_get_reject_bad_input(caller):
    disk = await create_disk(caller)
    bad_lists = [
        (dict(type=cp.OBJECT_TYPE_UNSPECIFIED), "BackupService.6506"),
        (dict(type=99), "BackupService.6400"),  # undefined enum numbers: refused at the edge
        (dict(type=DISK, status=99), "BackupService.6400"),
        (dict(type=DISK, resource_id="../x"), "BackupService.6504"),
        (dict(type=DISK, server_id="x' OR 1=1 --"), "BackupService.6504"),
        (dict(type=DISK, page=cp.PageRequest(limit=-1)), "BackupService.6505"),
        (dict(type=DISK, page=cp.PageRequest(limit=1001)), "BackupService.6505"),
        (dict(type=DISK, page=cp.PageRequest(limit=10, offset=-1)), "BackupService.6505"),
    ]
    for fields, cbr_code in bad_lists:
        await expect_error(caller.protectables.ListProtectables(pp.ListProtectablesRequest(**fields)),
                           INVALID, cbr_code)
    bad_gets = [
        (cp.OBJECT_TYPE_UNSPECIFIED, disk.resource_id, INVALID, "BackupService.6506"),
        (DISK, "", INVALID, "BackupService.6504"),
        (DISK, "../x", INVALID, "BackupService.6504"),
        (DISK, disk.resource_id + "\n", INVALID, "BackupService.6504"),
        (DISK, str(uuid.uuid4()), NOT_FOUND, "BackupService.6521"),
        (SERVER, str(uuid.uuid4()), NOT_FOUND, "BackupService.6522"),
        (TURBO, str(uuid.uuid4()), NOT_FOUND, "BackupService.6523"),
        (SERVER, disk.resource_id, NOT_FOUND, "BackupService.6522"),   # a disk is not a server
    ]
    for object_type, resource_id, code, cbr_code in bad_gets:
        await expect_error(get(caller, object_type, resource_id), code, cbr_code)


# Servers


async def test_define_server_attaches_disks_in_the_given_order(caller):
    a = await create_disk(caller, "a", size_bytes=4 * MIB)
    b = await create_disk(caller, "b", size_bytes=8 * MIB)
    spare = await create_disk(caller, "spare")
    server = await define_server(caller, "web-01", [b.resource_id, a.resource_id])
    assert uuid.UUID(server.resource_id)
    assert (server.name, server.type, server.resource_type, server.status, server.project_id, server.path) == (
        "web-01", SERVER, "OS::Nova::Server", AVAILABLE, caller.project_id, "")
    assert server.size_bytes == 12 * MIB
    assert [(d.disk_id, d.name, d.size_bytes, d.device) for d in server.disks] == [
        (b.resource_id, "b", 8 * MIB, "vda"), (a.resource_id, "a", 4 * MIB, "vdb")]
    assert await get(caller, SERVER, server.resource_id) == server
    for disk in (a, b):
        got = await get(caller, DISK, disk.resource_id)
        assert (got.status, got.server_id) == (IN_USE, server.resource_id)
    assert (await get(caller, DISK, spare.resource_id)).status == AVAILABLE


async def test_server_of_60_disks_keeps_device_order(caller):
    disks = [await create_disk(caller, f"d{i}", size_bytes=512 * (i + 1)) for i in range(60)]
    order = [d.resource_id for d in reversed(disks)]
    server = await define_server(caller, "big", order)
    devices = [d.device for d in server.disks]
    assert devices[:3] == ["vda", "vdb", "vdc"] and devices[25:28] == ["vdz", "vdaa", "vdab"]
    assert devices[-1] == "vdbh" and len(set(devices)) == 60
    assert server.size_bytes == sum(d.size_bytes for d in disks)
    got = await get(caller, SERVER, server.resource_id)
    assert [d.disk_id for d in got.disks] == order and [d.device for d in got.disks] == devices


async def test_define_server_rejections_write_nothing(services, caller):
    free, other = await create_disk(caller, "free"), await create_disk(caller, "other")
    holder = await create_server(caller, "holder", disks=1)
    attached = holder.disks[0].disk_id
    theirs = await create_disk(services.caller(), "theirs")
    ok = free.resource_id
    cases = [
        ("web", [], INVALID, "BackupService.6508"),
        ("web", [str(uuid.uuid4()) for _ in range(61)], INVALID, "BackupService.6508"),
        ("web", [ok, other.resource_id, ok], INVALID, "BackupService.6508"),
        ("web", [ok, ok.upper()], INVALID, "BackupService.6508"),        # the same disk in another case
        ("web", [ok, "../x"], INVALID, "BackupService.6504"),
        ("web", [ok, ""], INVALID, "BackupService.6504"),
        ("web", [ok, str(uuid.uuid4())], NOT_FOUND, "BackupService.6521"),
        ("web", [ok, theirs.resource_id], NOT_FOUND, "BackupService.6521"),
        ("web", [ok, attached], FAILED, "BackupService.7003"),
        ("", [ok], INVALID, "BackupService.6501"),
        ("w" * 65, [ok], INVALID, "BackupService.6501"),
        ("a/b", [ok], INVALID, "BackupService.6501"),
        ("web\n", [ok], INVALID, "BackupService.6501"),
    ]
    for name, disk_ids, code, cbr_code in cases:
        await expect_error(caller.protectables.DefineServer(pp.DefineServerRequest(name=name, disk_ids=disk_ids)),
                           code, cbr_code)
    assert await listed_ids(caller, SERVER) == [holder.resource_id]
    assert await listed_ids(caller, status=AVAILABLE) == [free.resource_id, other.resource_id]
    assert (await get(caller, DISK, attached)).server_id == holder.resource_id
    assert (await get(caller, DISK, free.resource_id)).server_id == ""


async def test_delete_server_frees_its_disks(services, caller):
    server = await create_server(caller, "web", disks=2)
    disk_ids = [d.disk_id for d in server.disks]
    await caller.protectables.DeleteServer(pp.DeleteServerRequest(server_id=server.resource_id))
    assert (await listed(caller, SERVER)).count == 0
    await expect_error(get(caller, SERVER, server.resource_id), NOT_FOUND, "BackupService.6522")
    assert await listed_ids(caller, server_id=server.resource_id) == []
    for disk_id in disk_ids:
        disk = await get(caller, DISK, disk_id)
        assert (disk.status, disk.server_id) == (AVAILABLE, "")
        assert os.path.exists(disk.path)  # the disks themselves stay
    again = await define_server(caller, "again", list(reversed(disk_ids)))
    assert [(d.disk_id, d.device) for d in again.disks] == [(disk_ids[1], "vda"), (disk_ids[0], "vdb")]
    await caller.protectables.DeleteServer(pp.DeleteServerRequest(server_id=again.resource_id))
    await caller.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk_ids[0]))
    assert await listed_ids(caller) == [disk_ids[1]]


async def test_delete_server_rejections(services, caller):
    server = await create_server(caller, "web", disks=1)
    theirs = await create_server(services.caller(), "theirs", disks=1)
    cases = [
        ("", INVALID, "BackupService.6504"),
        ("../x", INVALID, "BackupService.6504"),
        (str(uuid.uuid4()), NOT_FOUND, "BackupService.6522"),
        (theirs.resource_id, NOT_FOUND, "BackupService.6522"),
        (server.disks[0].disk_id, NOT_FOUND, "BackupService.6522"),   # a disk id is no server
    ]
    for server_id, code, cbr_code in cases:
        await expect_error(caller.protectables.DeleteServer(pp.DeleteServerRequest(server_id=server_id)),
                           code, cbr_code)
    assert await get(caller, SERVER, server.resource_id) == server
    assert (await get(caller, DISK, server.disks[0].disk_id)).status == IN_USE


# File systems


async def test_file_system_is_a_folder_whose_size_is_its_files(services, caller):
    fs = await define_fs(caller, "share.1")
    assert uuid.UUID(fs.resource_id)
    assert (fs.name, fs.type, fs.resource_type, fs.status, fs.size_bytes, fs.project_id) == (
        "share.1", TURBO, "OS::Sfs::Turbo", AVAILABLE, 0, caller.project_id)
    root = fs_folder(services, caller) / fs.resource_id
    assert fs.path == str(root) and root.is_dir() and list(root.iterdir()) == []

    (root / "sub").mkdir()
    (root / "a.txt").write_bytes(b"x" * 1000)
    (root / "sub" / "b.bin").write_bytes(b"y" * 234)
    got = await get(caller, TURBO, fs.resource_id)
    assert got.size_bytes == 1234 and got.path == fs.path
    assert [p.size_bytes for p in (await listed(caller, TURBO)).protectables] == [1234]

    await caller.protectables.DeleteFileSystem(pp.DeleteFileSystemRequest(file_system_id=fs.resource_id))
    assert not root.exists()
    assert (await listed(caller, TURBO)).count == 0
    await expect_error(get(caller, TURBO, fs.resource_id), NOT_FOUND, "BackupService.6523")
    await expect_error(caller.protectables.DeleteFileSystem(pp.DeleteFileSystemRequest(
        file_system_id=fs.resource_id)), NOT_FOUND, "BackupService.6523")


@pytest.mark.parametrize("name", ["", "f" * 65, "a/b", "../up", "share\n", "two words"])
async def test_define_file_system_rejects_bad_names(services, caller, name):
    await expect_error(caller.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name=name)),
                       INVALID, "BackupService.6501")
    assert (await listed(caller, TURBO)).count == 0
    assert entries(fs_folder(services, caller)) == {}


async def test_delete_file_system_rejections(services, caller):
    fs = await define_fs(caller)
    theirs = await define_fs(services.caller(), "theirs")
    cases = [
        ("", INVALID, "BackupService.6504"),
        ("../x", INVALID, "BackupService.6504"),
        (str(uuid.uuid4()), NOT_FOUND, "BackupService.6523"),
        (theirs.resource_id, NOT_FOUND, "BackupService.6523"),
    ]
    for fs_id, code, cbr_code in cases:
        await expect_error(caller.protectables.DeleteFileSystem(pp.DeleteFileSystemRequest(file_system_id=fs_id)),
                           code, cbr_code)
    assert os.path.isdir(fs.path) and os.path.isdir(theirs.path)
    assert await listed_ids(caller, TURBO) == [fs.resource_id]


# Projects and roles


async def test_another_projects_resources_are_invisible(services, caller):
    stranger = services.caller()
    disk = await create_disk(stranger, "theirs")
    server = await create_server(stranger, "their-server", disks=1)
    fs = await define_fs(stranger, "their-share")
    for object_type, resource in ((DISK, disk), (SERVER, server), (TURBO, fs)):
        assert (await listed(caller, object_type)).count == 0
        assert await listed_ids(caller, object_type, resource_id=resource.resource_id) == []
    await expect_error(get(caller, DISK, disk.resource_id), NOT_FOUND, "BackupService.6521")
    await expect_error(get(caller, SERVER, server.resource_id), NOT_FOUND, "BackupService.6522")
    await expect_error(get(caller, TURBO, fs.resource_id), NOT_FOUND, "BackupService.6523")
    assert await listed_ids(stranger, DISK) == [disk.resource_id, server.disks[0].disk_id]


async def test_readonly_can_read_but_not_write(services, caller):
    disk = await create_disk(caller)
    reader = services.caller(caller.project_id, roles=("cbr_readonly",))
    assert await listed_ids(reader) == [disk.resource_id]
    assert await get(reader, DISK, disk.resource_id) == disk
    await expect_error(reader.protectables.CreateDisk(pp.CreateDiskRequest(name="sneaky", size_bytes=MIB)), DENIED)
    await expect_error(reader.protectables.ResizeDisk(pp.ResizeDiskRequest(
        disk_id=disk.resource_id, new_size_bytes=16 * MIB)), DENIED)
    await expect_error(reader.protectables.DeleteDisk(pp.DeleteDiskRequest(disk_id=disk.resource_id)), DENIED)
    await expect_error(reader.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="fs")), DENIED)
    assert await listed_ids(caller) == [disk.resource_id]
    assert entries(pool_folder(services, caller)) == {f"{disk.resource_id}.raw": disk.size_bytes}
    assert not fs_folder(services, caller).exists()


@pytest.mark.parametrize("project_id", ["team.a", "../escape"])
async def test_project_id_that_cannot_be_a_folder(services, project_id):
    odd = services.caller(project_id=project_id)
    await expect_error(odd.protectables.CreateDisk(pp.CreateDiskRequest(name="d", size_bytes=MIB)),
                       INVALID, "BackupService.6511")
    await expect_error(odd.protectables.DefineFileSystem(pp.DefineFileSystemRequest(name="f")),
                       INVALID, "BackupService.6511")
    assert (await listed(odd)).count == 0 and (await listed(odd, TURBO)).count == 0
    settings = services.runtimes["backup"].settings
    for root in (settings.pool_dir, settings.fs_root):
        assert not (Path(root) / project_id).exists()
