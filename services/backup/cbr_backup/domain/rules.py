"""The rules a protectable or task request must satisfy, as pure checks that raise before anything is written."""
from __future__ import annotations

import datetime as dt
import re
from typing import Sequence

from cbr_common import request_checks
from cbr_backup.domain import errors
from cbr_backup.domain.model import (OBJECT_TYPES, OPERATION_TYPES, PROTECTABLE_STATUSES,
                                     TASK_STATUSES, Disk, Task)

# Names: 1-64 characters of letters, digits, '_', '-' and '.'. Names are labels only; they never reach a path.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SECTOR = 512
MAX_DISK_BYTES = 64 * 1024 ** 4  # 64 TiB
MIN_SERVER_DISKS, MAX_SERVER_DISKS = 1, 60
# Project ids name a folder of the local provider, so they must be a plain path component (UUIDs, hex ids,
# "project-1" all are); no dots, so never "." or "..".
PROJECT_FOLDER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise errors.InvalidNameError(f"{what} must be 1-64 characters of letters, digits, '_', '-' and '.'")
    return name


def check_disk_size(size_bytes: int, what: str = "size_bytes") -> int:
    if size_bytes <= 0 or size_bytes % SECTOR or size_bytes > MAX_DISK_BYTES:
        raise errors.InvalidDiskSizeError(
            f"{what} must be a positive multiple of {SECTOR} of at most {MAX_DISK_BYTES} (64 TiB), got {size_bytes}")
    return size_bytes


def check_new_disk_size(current_bytes: int, new_bytes: int) -> int:
    check_disk_size(new_bytes, "new_size_bytes")
    if new_bytes <= current_bytes:
        raise errors.DiskShrinkError(
            f"new_size_bytes must be larger than the current {current_bytes} bytes; disks never shrink")
    return new_bytes


def check_id(value: str, what: str) -> str:
    return request_checks.canonical_id(value, what, errors.InvalidIdError)


def check_id_list(values: Sequence[str], what: str) -> list[str]:
    return request_checks.id_list(values, what, errors.InvalidIdError)


def check_page(limit: int, offset: int) -> tuple[int, int]:
    return request_checks.page_bounds(limit, offset, errors.InvalidPagingError)


def check_object_type(object_type: str) -> str:
    if object_type not in OBJECT_TYPES:
        raise errors.InvalidObjectTypeError("type is required: server, disk or turbo")
    return object_type


def check_status_filter(status: str) -> str:
    if status and status not in PROTECTABLE_STATUSES:
        raise errors.InvalidStatusError(f"status must be one of {', '.join(PROTECTABLE_STATUSES)}")
    return status


def check_server_disks(disk_ids: Sequence[str]) -> list[str]:
    if not MIN_SERVER_DISKS <= len(disk_ids) <= MAX_SERVER_DISKS:
        raise errors.InvalidServerDisksError(
            f"a server has {MIN_SERVER_DISKS}..{MAX_SERVER_DISKS} disks, got {len(disk_ids)}")
    ids = [check_id(d, "disk_id") for d in disk_ids]
    if len(set(ids)) != len(ids):
        raise errors.InvalidServerDisksError("disk_ids repeat a disk")
    return ids


def device_name(index: int) -> str:
    """Attachment index -> device, as Linux names virtio disks: vda..vdz, vdaa..vdaz, vdba, ..."""
    if index < 0:
        raise ValueError("device index must not be negative")
    letters = ""
    n = index + 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "vd" + letters


def device_order(device: str) -> tuple[int, str]:
    """Sort key that puts "vdz" before "vdaa"."""
    return len(device), device


def check_attachable(disk: Disk) -> Disk:
    if disk.status != "available" or disk.server_id:
        where = f" (attached to server {disk.server_id})" if disk.server_id else ""
        raise errors.DiskStatusError(f"disk {disk.disk_id} is {disk.status}{where}; only available disks attach")
    return disk


def check_deletable(disk: Disk) -> Disk:
    if disk.status == "in-use" or disk.server_id:
        raise errors.DiskStatusError(
            f"disk {disk.disk_id} is attached to server {disk.server_id}; delete the server first")
    return disk


def check_resizable(disk: Disk) -> Disk:
    if disk.status in ("error", "restoring"):  # restoring: a rollback would put the old size back
        raise errors.DiskStatusError(f"disk {disk.disk_id} is {disk.status} and cannot be resized")
    return disk


def check_project_folder(project_id: str) -> str:
    if not PROJECT_FOLDER_RE.fullmatch(project_id or ""):
        raise errors.InvalidProjectError(
            "the project id must be 1-64 letters, digits, '_' or '-' to own local disks and file systems")
    return project_id


def check_task_filters(operation_type: str, status: str) -> None:
    if operation_type and operation_type not in OPERATION_TYPES:
        raise errors.InvalidOperationTypeError(f"operation_type must be one of {', '.join(OPERATION_TYPES)}")
    if status and status not in TASK_STATUSES:
        raise errors.InvalidStatusError(f"status must be one of {', '.join(TASK_STATUSES)}")


def check_time_range(start: dt.datetime | None, end: dt.datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise errors.InvalidTimeRangeError("end_time must be after start_time")


STOPPABLE_WHILE_RUNNING = ("backup", "restore", "replication")


def check_cancellable(task: Task) -> Task:
    if task.is_final:
        raise errors.TaskNotCancellableError(f"task {task.task_id} is already {task.status}")
    if task.operation_type == "vault_delete":
        raise errors.TaskNotCancellableError("a vault delete cannot be cancelled")
    if task.status == "running" and task.operation_type not in STOPPABLE_WHILE_RUNNING:
        raise errors.TaskNotCancellableError(
            f"a running {task.operation_type} task runs to its end; only waiting ones can be cancelled")
    return task
