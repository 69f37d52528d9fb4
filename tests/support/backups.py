"""Helpers for tests that back up and restore through the real services: disk contents, waiting on tasks."""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import random
import time

import grpc

from cbr.backup.v1 import backup_pb2 as bp
from cbr.backup.v1 import task_pb2 as tp
from cbr.vault.v1 import vault_pb2 as vp
from tests.support.calls import BACKUP, DISK, MIB, create_disk, create_vault, ref

FINAL = {tp.TASK_STATUS_SUCCESS, tp.TASK_STATUS_FAILED, tp.TASK_STATUS_TIMEOUT, tp.TASK_STATUS_SKIPPED,
         tp.TASK_STATUS_CANCELLED}


def write_disk(path: str, seed: int, chunks: int = 6, chunk: int = 256 * 1024) -> None:
    """Writes `chunks` pieces of random and text-like data at seeded places, leaving holes between, while
    holding the disk's writer lock as a hypervisor would (so snapshots see one instant)."""
    rng = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        for i in range(chunks):
            offset = rng.randrange(0, max(1, size - chunk)) // 4096 * 4096
            if i % 2:
                data = rng.randbytes(chunk)
            else:
                words = [f"line {rng.randrange(10**6)} of seed {seed} " for _ in range(chunk // 24)]
                data = "".join(words).encode()[:chunk]
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def wait_task(caller, task_id: str, timeout: float = 60.0) -> tp.Task:
    deadline = time.monotonic() + timeout
    while True:
        try:
            task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
        except grpc.aio.AioRpcError as error:
            # A vault_delete task is recorded when the backup service hears of the delete: soon, not at once.
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            task = None
        if task is not None and task.status in FINAL:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not final after {timeout} s: {task}")
        await asyncio.sleep(0.1)


async def wait_success(caller, task_id: str, timeout: float = 60.0) -> tp.Task:
    task = await wait_task(caller, task_id, timeout)
    assert task.status == tp.TASK_STATUS_SUCCESS, (tp.TaskStatus.Name(task.status), task.error)
    return task


async def checkpoint(caller, vault_id: str, **fields) -> bp.Checkpoint:
    return (await caller.backups.CreateCheckpoint(bp.CreateCheckpointRequest(vault_id=vault_id, **fields))).checkpoint


async def backup_now(caller, vault_id: str, **fields) -> bp.Backup:
    """One checkpoint of a one-resource vault, waited for; returns its backup."""
    cp = await checkpoint(caller, vault_id, **fields)
    assert len(cp.resources) == 1, cp
    await wait_success(caller, cp.resources[0].task_id)
    return await get_backup(caller, cp.resources[0].backup_id)


async def get_backup(caller, backup_id: str) -> bp.Backup:
    return (await caller.backups.GetBackup(bp.GetBackupRequest(backup_id=backup_id))).backup


async def disk_in_vault(caller, size_bytes: int = 8 * MIB, seed: int = 1, **vault_fields):
    """A disk with data and a disk vault holding it: (disk, vault)."""
    disk = await create_disk(caller, f"disk-{seed}", size_bytes)
    write_disk(disk.path, seed)
    vault = await create_vault(caller, f"vault-{seed}", DISK, BACKUP, resources=[ref(disk)], **vault_fields)
    return disk, vault


async def new_disk_from(caller, backup_id: str, name: str = "restored", size_bytes: int = 0) -> str:
    reply = await caller.backups.CreateDiskFromBackup(bp.CreateDiskFromBackupRequest(
        backup_id=backup_id, name=name, size_bytes=size_bytes))
    await wait_success(caller, reply.task_id)
    return reply.disk_id


async def disk_path(caller, disk_id: str) -> str:
    from cbr.backup.v1 import protectable_pb2 as pp
    reply = await caller.protectables.GetProtectable(pp.GetProtectableRequest(type=DISK, resource_id=disk_id))
    return reply.protectable.path


def fill(path: str, offset_mib: int, mib: int, seed: int) -> None:
    """Random (incompressible) MiBs from offset_mib on: every block is a chunk of its full size."""
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        f.seek(offset_mib * MIB)
        for _ in range(mib):
            f.write(rng.randbytes(MIB))


async def running_with_progress(caller, task_id: str, timeout: float = 60.0) -> tp.Task:
    """Waits until the task runs and has read something (it may still wait for its first attempt before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = (await caller.tasks.GetTask(tp.GetTaskRequest(task_id=task_id))).task
        if task.status == tp.TASK_STATUS_RUNNING and task.bytes_done > 0:
            return task
        assert task.status in (tp.TASK_STATUS_WAITING, tp.TASK_STATUS_RUNNING), tp.TaskStatus.Name(task.status)
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} never ran")
