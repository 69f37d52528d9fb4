"""The backup service's pure rules: names, sizes, ids, paging, devices, states, and their error codes."""
from __future__ import annotations

import datetime as dt
import inspect
import uuid

import grpc
import pytest

from cbr_backup.domain import errors, rules
from cbr_backup.domain.model import FINAL_TASK_STATUSES, TASK_STATUSES, Disk, Task
from cbr_common.grpc_errors import status_code_for

TIB = 1024 ** 4


@pytest.mark.parametrize("name", ["a", "disk-1", "Disk_2.raw", "x" * 64, "..", "0"])
def test_names_accepted(name):
    assert rules.check_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "with space", "a/b", "tab\t", "disk\n", "ünïcode", "a*b"])
def test_names_rejected(name):
    with pytest.raises(errors.InvalidNameError):
        rules.check_name(name)


@pytest.mark.parametrize("size", [512, 4096, 8 * 1024 ** 2, 64 * TIB])
def test_disk_sizes_accepted(size):
    assert rules.check_disk_size(size) == size


@pytest.mark.parametrize("size", [0, -512, 1, 511, 513, 64 * TIB + 512, 2 ** 63 - 1])
def test_disk_sizes_rejected(size):
    with pytest.raises(errors.InvalidDiskSizeError):
        rules.check_disk_size(size)


def test_disks_only_grow():
    assert rules.check_new_disk_size(1024, 2048) == 2048
    for same_or_smaller in (1024, 512):
        with pytest.raises(errors.DiskShrinkError):
            rules.check_new_disk_size(1024, same_or_smaller)
    with pytest.raises(errors.InvalidDiskSizeError):
        rules.check_new_disk_size(1024, 2000)  # larger, but not whole sectors
    with pytest.raises(errors.InvalidDiskSizeError):
        rules.check_new_disk_size(1024, 65 * TIB)


def test_ids_are_canonical_uuids():
    value = str(uuid.uuid4())
    assert rules.check_id(value, "disk_id") == value
    assert rules.check_id(value.upper(), "disk_id") == value
    for bad in ("", "nope", value[:-1], value.replace("-", ""), "../" + value, f"{{{value}}}", value + " "):
        with pytest.raises(errors.InvalidIdError):
            rules.check_id(bad, "disk_id")


def test_paging():
    assert rules.check_page(0, 0) == (1000, 0)
    assert rules.check_page(1, 5) == (1, 5)
    assert rules.check_page(1000, 0) == (1000, 0)
    for limit, offset in ((-1, 0), (1001, 0), (10, -1)):
        with pytest.raises(errors.InvalidPagingError):
            rules.check_page(limit, offset)


def test_object_type_is_required():
    for good in ("disk", "server", "turbo"):
        assert rules.check_object_type(good) == good
    for bad in ("", "unknown", "volume"):
        with pytest.raises(errors.InvalidObjectTypeError):
            rules.check_object_type(bad)


def test_status_filter():
    assert rules.check_status_filter("") == ""
    assert rules.check_status_filter("in-use") == "in-use"
    with pytest.raises(errors.InvalidStatusError):
        rules.check_status_filter("unknown")


def test_server_disk_lists():
    ids = [str(uuid.uuid4()) for _ in range(61)]
    assert rules.check_server_disks(ids[:1]) == ids[:1]
    assert rules.check_server_disks(ids[:60]) == ids[:60]
    for bad in ([], ids, [ids[0], ids[0].upper()]):
        with pytest.raises(errors.InvalidServerDisksError):
            rules.check_server_disks(bad)
    with pytest.raises(errors.InvalidIdError):
        rules.check_server_disks([ids[0], "not-a-uuid"])


def test_device_names_follow_linux_order():
    names = [rules.device_name(i) for i in range(60)]
    assert names[:3] == ["vda", "vdb", "vdc"]
    assert names[25:28] == ["vdz", "vdaa", "vdab"]
    assert names[52] == "vdba"
    assert len(set(names)) == 60
    assert sorted(reversed(names), key=rules.device_order) == names
    with pytest.raises(ValueError):
        rules.device_name(-1)


def _disk(**fields) -> Disk:
    return Disk(disk_id=str(uuid.uuid4()), project_id="p", name="d", size_bytes=512, path="/x", **fields)


def test_attach_and_delete_need_a_free_disk():
    free = _disk()
    assert rules.check_attachable(free) is free
    assert rules.check_deletable(free) is free
    attached = _disk(status="in-use", server_id=str(uuid.uuid4()), device="vda")
    for check in (rules.check_attachable, rules.check_deletable):
        with pytest.raises(errors.DiskStatusError):
            check(attached)
    with pytest.raises(errors.DiskStatusError):
        rules.check_attachable(_disk(status="error"))
    with pytest.raises(errors.DiskStatusError):
        rules.check_resizable(_disk(status="error"))
    with pytest.raises(errors.DiskStatusError):
        rules.check_resizable(_disk(status="restoring"))
    assert rules.check_resizable(attached) is attached  # attached disks may grow


@pytest.mark.parametrize("project", ["project-abc123", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", str(uuid.uuid4()), "p_1"])
def test_project_folders_accepted(project):
    assert rules.check_project_folder(project) == project


@pytest.mark.parametrize("project", ["", ".", "..", "a/b", "a\\b", "a.b", "x" * 65, "p\x00", "p\n"])
def test_project_folders_rejected(project):
    with pytest.raises(errors.InvalidProjectError):
        rules.check_project_folder(project)


def test_task_filters_and_time_range():
    rules.check_task_filters("", "")
    rules.check_task_filters("vault_delete", "running")
    with pytest.raises(errors.InvalidOperationTypeError):
        rules.check_task_filters("unknown", "")
    with pytest.raises(errors.InvalidStatusError):
        rules.check_task_filters("", "unknown")
    now = dt.datetime.now(dt.timezone.utc)
    rules.check_time_range(None, now)
    rules.check_time_range(now, now + dt.timedelta(seconds=1))
    with pytest.raises(errors.InvalidTimeRangeError):
        rules.check_time_range(now, now)


@pytest.mark.parametrize("status", TASK_STATUSES)
def test_only_unfinished_tasks_cancel(status):
    task = Task(task_id=str(uuid.uuid4()), project_id="p", operation_type="backup", status=status)
    if status in FINAL_TASK_STATUSES:
        with pytest.raises(errors.TaskNotCancellableError):
            rules.check_cancellable(task)
    else:
        assert rules.check_cancellable(task) is task


def test_error_codes_are_distinct_and_map_to_grpc_codes():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if c.__module__ == errors.__name__ and c.cbr_code]
    codes = [c.cbr_code for c in classes]
    assert len(codes) == len(set(codes))
    # The destination's transfer API has its own range (DESIGN.md 17.10).
    assert all(code.startswith("BackupService.") or code.startswith("RegionTransferService.69") for code in codes)
    expected = {errors.InvalidNameError: grpc.StatusCode.INVALID_ARGUMENT,
                errors.InvalidIdError: grpc.StatusCode.INVALID_ARGUMENT,
                errors.DiskNotFoundError: grpc.StatusCode.NOT_FOUND,
                errors.TaskNotFoundError: grpc.StatusCode.NOT_FOUND,
                errors.DiskStatusError: grpc.StatusCode.FAILED_PRECONDITION,
                errors.TaskNotCancellableError: grpc.StatusCode.FAILED_PRECONDITION,
                errors.PoolCapacityError: grpc.StatusCode.RESOURCE_EXHAUSTED,
                errors.ChunkCheckFailedError: grpc.StatusCode.DATA_LOSS,
                errors.ChunksMissingError: grpc.StatusCode.FAILED_PRECONDITION,
                errors.NotAPeerError: grpc.StatusCode.PERMISSION_DENIED}
    for cls, code in expected.items():
        assert status_code_for(cls("x")) == code
    assert errors.DiskStatusError.cbr_code == "BackupService.7003"


def test_a_full_vault_takes_no_backup_but_holds_the_one_that_fills_it():
    from cbr_backup.domain.backups import GIB, check_fits, check_room
    check_room(GIB - 1, 1, False)
    check_fits(GIB, 1, False)  # exactly full after the backup: it stays
    with pytest.raises(errors.VaultFullError):
        check_room(GIB, 1, False)  # ... but nothing more starts
    with pytest.raises(errors.VaultFullError):
        check_fits(GIB + 1, 1, False)
    check_room(10 * GIB, 1, True)  # auto_expand: the vault grows instead
    check_fits(10 * GIB, 1, True)


def test_a_full_backup_needs_room_for_the_resource_an_incremental_only_some_room():
    from cbr_backup.domain.backups import GIB, check_room
    mib = 1 << 20
    check_room(GIB - 8 * mib, 1, False, full_bytes=8 * mib)  # fits exactly
    with pytest.raises(errors.VaultFullError) as refused:
        check_room(GIB - 8 * mib, 1, False, full_bytes=8 * mib + 1)
    assert "8388609" in str(refused.value) and "8388608" in str(refused.value)  # needed, and free
    check_room(GIB - 1, 1, False)  # an incremental: a byte of room is enough to start
    with pytest.raises(errors.VaultFullError):
        check_room(GIB, 1, False, full_bytes=0)  # full: not even an incremental
    check_room(GIB, 1, True, full_bytes=100 * GIB)  # auto_expand: the vault grows instead


def test_resource_protected_is_a_failed_precondition_with_its_own_code():
    assert status_code_for(errors.ResourceProtectedError("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert errors.ResourceProtectedError.cbr_code == "BackupService.6735"


def test_one_checkpoint_takes_room_for_each_full_backup_it_starts():
    from cbr_backup.domain.backups import GIB, Room
    room = Room(used_bytes=GIB - 10, size_gb=1, auto_expand=False)
    room.check(6)
    room.take(6)
    with pytest.raises(errors.VaultFullError):
        room.check(6)  # fit alone, not after the first
    room.check(0)  # an incremental still starts: 4 bytes free
    room.take(4)
    with pytest.raises(errors.VaultFullError):
        room.check(0)  # now the vault counts as full
