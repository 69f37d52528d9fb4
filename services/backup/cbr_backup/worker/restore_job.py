"""The restore job: a disk backup to a disk (in place, writing only what differs), each per-disk backup of a
server backup to its mapped disk, a disk backup to a new disk, or a file-system backup into a folder of a file
system (never outside it). Every chunk is verified before its bytes are written (DESIGN.md 7).

In place, a disk is never silently half-restored (DESIGN.md 7.1): a restore point of every target disk is taken
first where the provider can (a retry finds its earlier attempt's), the disks show `restoring` from before the
first write until the data is whole, and a failure rolls them back to the point. Where there is no point, a
failure leaves them `restoring` for the retry, and the final failure marks them `error` (service/lifecycle.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.datapath import restore_in_place, restore_to_new_disk
from cbr_backup.datapath.backup_reads import TreeView
from cbr_backup.datapath.tree_restore import restore_tree
from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup, check_restorable
from cbr_backup.domain.model import Disk
from cbr_backup.service import lifecycle
from cbr_backup.worker import manifests
from cbr_backup.worker.context import JobContext, check_still_mine
from cbr_common import metrics
from cbr_common.proto_enums import enum_value

RESTORING = "restoring"


async def run_restore(ctx: JobContext) -> None:
    task, params = ctx.task, ctx.task.params
    async with ctx.make_uow() as uow:
        backup = await uow.backups.get_backup(task.project_id, task.backup_id)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {task.backup_id} not found")
    if backup.corrupt or any(c.corrupt for c in backup.children):
        check_restorable(backup)  # raises BackupCorruptError: never restore what verify found damaged
    keys = await ctx.backup_keys(backup)  # a replica's chunks are named by its namespace's id key
    provider, store = ctx.resources.provider, ctx.store
    # The index says where chunks live (DESIGN.md 13.3); holding the vault's shared lock keeps GC from
    # repacking (moving live chunks) while this restore reads them.
    async with ctx.index(backup.vault_id) as index:
        if params["kind"] == "turbo":
            manifest = await asyncio.to_thread(manifests.load, store, keys, backup)
            if params.get("paths"):  # a selective restore: those paths and the directories above them
                manifest = TreeView(manifest).select([bytes.fromhex(p) for p in params["paths"]])
            root = provider.file_system_path(task.project_id, params["file_system_id"])
            result = await asyncio.to_thread(restore_tree, manifest, store, keys, backup.vault_id, root,
                                             subpath=params["target_path"], progress=ctx.progress, index=index)
            written = result.written_bytes
        elif params["kind"] == "new_disk":
            manifest = await asyncio.to_thread(manifests.load, store, keys, backup)
            disk_id = params["disk_id"]
            with _pool_room(disk_id):
                result = await _write_disk(provider, task.project_id, disk_id, True, restore_to_new_disk, manifest,
                                           store, keys, backup.vault_id, progress=ctx.progress, index=index)
                if params["size_bytes"] > manifest.disk_size:
                    await provider.grow_disk(task.project_id, disk_id, params["size_bytes"])  # the rest: zeros
            written = result.written_bytes
        else:  # disk or server: each backed-up disk onto its target disk, in place
            written = await _restore_disks_in_place(ctx, backup, keys, index)
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        await lifecycle.move_backup(uow, task.project_id, backup.backup_id, "available")
        done, total = ctx.progress_values()
        await lifecycle.finish(uow, task, "success", bytes_done=done, bytes_total=total,
                              extra_info=dict(task.extra_info, written_bytes=str(written)))
        await uow.publish(ev.RestoreCompleted(
            project_id=task.project_id, backup_id=backup.backup_id, vault_id=backup.vault_id, task_id=task.task_id,
            resource_type=enum_value(common_pb2.ObjectType, backup.resource_type),
            target_resource_id=task.resource_id, new_disk=params["kind"] == "new_disk", written_bytes=written))
        uow.after_commit(lambda: metrics.RESTORE_BYTES.inc(written))
        await uow.commit()


async def _restore_disks_in_place(ctx: JobContext, backup: Backup, keys, index) -> int:
    """Restores every target disk; returns the bytes written. On a failure the disks with a restore point are
    rolled back (all of them: a server is restored whole or not at all) before the error goes on."""
    task, provider, store = ctx.task, ctx.resources.provider, ctx.store
    targets: dict[str, str] = task.params["targets"]  # backup (or per-disk backup) id -> disk id
    force = bool(task.params.get("force", False))  # the caller overwrites disks a running client holds
    parts = {c.backup_id: c for c in backup.children} or {backup.backup_id: backup}
    loaded = {part_id: await asyncio.to_thread(manifests.load, store, keys, parts[part_id]) for part_id in targets}
    ctx.expect(sum(m.disk_size for m in loaded.values()))
    disks = await _target_disks(ctx, targets.values())
    # What the disks were before this restore's first attempt wrote them: a retry finds them on the task.
    before = task.params.get("disk_status_before") or {d: disk.status for d, disk in disks.items()}
    points = {}
    try:
        for disk_id in disks:
            point = await provider.restore_point(task.project_id, disk_id, task.task_id, force=force)
            if point is not None:
                points[disk_id] = point
        await _set_disk_statuses(ctx, {d: RESTORING for d in disks}, disk_status_before=before)
        written = 0
        for part_id, disk_id in targets.items():
            disk, manifest = disks[disk_id], loaded[part_id]
            with _pool_room(disk_id):
                result = await _write_disk(provider, task.project_id, disk_id, False, restore_in_place, manifest,
                                           store, keys, backup.vault_id, progress=ctx.progress, index=index,
                                           force=force)
                if disk.size_bytes > manifest.disk_size:  # the disk keeps its size; past the image: zeros
                    await provider.grow_disk(task.project_id, disk_id, disk.size_bytes)
            ctx.part_done()
            written += result.written_bytes
    except Exception:
        # Not on a kill or a worker shutdown (CancelledError): the disks stay `restoring` and the retry that
        # takes the job over finds the points. Nor when another worker runs the job now: it writes these disks.
        if points and await _still_this_run(ctx):
            for point in points.values():
                await point.roll_back()
            await _set_disk_statuses(ctx, {d: before[d] for d in points})
        raise
    # Whole now, whatever they were before (a disk an earlier failed restore left `error` included).
    await _set_disk_statuses(ctx, {d: "in-use" if disk.server_id else "available" for d, disk in disks.items()})
    for point in points.values():
        await point.release()  # after the statuses: a crash in between only leaves a point the next restore drops
    return written


async def _write_disk(provider, project_id: str, disk_id: str, fresh: bool, restore, manifest, *args,
                      force: bool = False, **kwargs):
    """Runs the data path's restore on the provider's writer of the disk (fresh: emptied first; force: even while
    a client holds it)."""
    writer = await provider.open_for_restore(project_id, disk_id, fresh, force)
    try:
        return await asyncio.to_thread(restore, manifest, *args, writer, **kwargs)
    finally:
        writer.close()


@contextlib.contextmanager
def _pool_room(disk_id: str):
    """A disk pool out of room fails the restore at once (RESOURCE_EXHAUSTED), not as a transient I/O error:
    a sparse disk takes space as its blocks are written."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise errors.PoolCapacityError(
                f"the disk pool has no room left to restore disk {disk_id} ({os.strerror(exc.errno)})") from exc
        raise


async def _target_disks(ctx: JobContext, disk_ids) -> dict[str, Disk]:
    disks = {}
    async with ctx.make_uow() as uow:
        for disk_id in disk_ids:
            disk = await uow.inventory.get_disk(ctx.task.project_id, disk_id)
            if disk is None:
                raise errors.DiskNotFoundError(f"disk {disk_id} no longer exists")
            disks[disk_id] = disk
    return disks


async def _set_disk_statuses(ctx: JobContext, statuses: dict[str, str], **params) -> None:
    """The disks' statuses, and params to remember on the task, in one transaction."""
    task = ctx.task
    async with ctx.make_uow() as uow:
        for disk_id, status in statuses.items():
            await uow.inventory.set_disk_status(disk_id, status)
        if params:
            task.params = dict(task.params, **params)
            await uow.tasks.update_fields(task.task_id, params=task.params)
        await uow.commit()


async def _still_this_run(ctx: JobContext) -> bool:
    """The task is still this attempt's (not taken over by a worker that thought this one dead)."""
    task = ctx.task
    async with ctx.make_uow() as uow:
        latest = await uow.tasks.get(task.project_id, task.task_id)
    return latest is not None and latest.worker_id == task.worker_id and latest.attempts == task.attempts
