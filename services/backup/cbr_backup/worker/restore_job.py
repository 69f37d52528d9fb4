"""The restore job: a disk backup to a disk (in place, writing only what differs), each per-disk backup of a
server backup to its mapped disk, a disk backup to a new disk, or a file-system backup into a folder of a file
system (never outside it). Every chunk is verified before its bytes are written (DESIGN.md 7)."""
from __future__ import annotations

import asyncio
import os

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.datapath import restore_in_place, restore_to_new_disk
from cbr_backup.datapath.tree_restore import restore_tree
from cbr_backup.domain import errors
from cbr_backup.domain.backups import check_restorable
from cbr_backup.service import lifecycle
from cbr_backup.worker import manifests
from cbr_backup.worker.context import JobContext, check_still_mine
from cbr_common.proto_enums import enum_value


async def run_restore(ctx: JobContext) -> None:
    task, params = ctx.task, ctx.task.params
    async with ctx.make_uow() as uow:
        backup = await uow.backups.get_backup(task.project_id, task.backup_id)
    if backup is None:
        raise errors.BackupNotFoundError(f"backup {task.backup_id} not found")
    if backup.corrupt or any(c.corrupt for c in backup.children):
        check_restorable(backup)  # raises BackupCorruptError: never restore what verify found damaged
    keys = await ctx.keys(backup.vault_id)
    provider, store = ctx.resources.provider, ctx.store
    written = 0
    if params["kind"] == "turbo":
        manifest = await asyncio.to_thread(manifests.load, store, keys, backup)
        root = provider.file_system_path(task.project_id, params["file_system_id"])
        result = await asyncio.to_thread(restore_tree, manifest, store, keys, backup.vault_id, root,
                                         subpath=params["target_path"], progress=ctx.progress)
        written = result.written_bytes
    elif params["kind"] == "new_disk":
        manifest = await asyncio.to_thread(manifests.load, store, keys, backup)
        path = provider.disk_path(task.project_id, params["disk_id"])
        result = await asyncio.to_thread(restore_to_new_disk, manifest, store, keys, backup.vault_id, path,
                                         progress=ctx.progress)
        os.truncate(path, params["size_bytes"])  # a larger new disk: the rest reads as zeros
        written = result.written_bytes
    else:  # disk or server: each backed-up disk onto its target disk, in place
        parts = {c.backup_id: c for c in backup.children} or {backup.backup_id: backup}
        loaded = {}
        for part_id in params["targets"]:
            loaded[part_id] = await asyncio.to_thread(manifests.load, store, keys, parts[part_id])
        ctx.expect(sum(m.disk_size for m in loaded.values()))
        for part_id, disk_id in params["targets"].items():
            async with ctx.make_uow() as uow:
                disk = await uow.inventory.get_disk(task.project_id, disk_id)
            if disk is None:
                raise errors.DiskNotFoundError(f"disk {disk_id} no longer exists")
            result = await asyncio.to_thread(restore_in_place, loaded[part_id], store, keys, backup.vault_id,
                                             disk.path, progress=ctx.progress)
            if disk.size_bytes > loaded[part_id].disk_size:
                os.truncate(disk.path, disk.size_bytes)  # the disk keeps its size; past the image it reads zeros
            ctx.part_done()
            written += result.written_bytes
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
        await uow.commit()
