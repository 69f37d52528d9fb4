"""The backup job: snapshot, back up each disk (or the file tree), then flip the rows to available.

Order: the data path makes every chunk and the manifest durable first (DESIGN.md 6.1); only then does one
transaction set the backup (and a server's per-disk backups) available with its manifest, finish the task,
free the resource and publish BackupCompleted and the vault's usage. Until that commit no reader sees the
backup as available, and a retry after a crash starts over with a fresh manifest id, reusing the chunks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.datapath import backup_disk, load_manifest, take_snapshot
from cbr_backup.datapath.extents import data_extents
from cbr_backup.datapath.tree_backup import backup_tree, load_tree_manifest
from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup, check_fits, check_room
from cbr_backup.service import lifecycle
from cbr_backup.worker.context import JobCancelled, JobContext, check_still_mine
from cbr_common.db import utcnow
from cbr_common.proto_enums import enum_value

log = logging.getLogger("cbr.worker")


@dataclass(frozen=True)
class Part:
    """One manifest the job made: a disk's, or a file system's."""
    manifest_id: str
    logical_bytes: int
    base_backup_id: str      # the backup it read only the changes against
    chunk_ids: frozenset     # every chunk it references
    read_bytes: int          # what was read: holes, unchanged files and shared extents are not


async def run_backup(ctx: JobContext) -> None:
    task = ctx.task
    async with ctx.make_uow() as uow:
        backup = await uow.backups.get_backup(task.project_id, task.backup_id, for_update=True)
        if backup is None:
            raise JobCancelled(f"backup {task.backup_id} was deleted before it ran (its vault went)")
        used = await uow.backups.used_bytes(backup.vault_id)
        retry = backup.started_time is not None  # an earlier attempt started it (and may have stored chunks)
        backup.started_time = backup.started_time or utcnow()  # a retry keeps the first attempt's start
        await lifecycle.move_backup(uow, task.project_id, backup.backup_id, "protecting",
                                    started_time=backup.started_time)
        await uow.commit()
    # Before any snapshot or read: a full vault fails now, not after the whole resource was read and stored. A
    # retry's own earlier chunks are already in `used`, so only the first attempt asks room for a full read.
    full_bytes = 0 if retry else sum(p.resource_size_bytes for p in backup.children or [backup] if not p.incremental)
    check_room(used, task.params["size_gb"], task.params["auto_expand"], full_bytes=full_bytes)
    keys = await ctx.keys(backup.vault_id)
    manifest_suffix = f"-r{ctx.run_id}"  # a retry never meets its earlier run's manifest
    results: dict[str, Part] = {}  # per backup row that gets a manifest
    # The vault's shared lock is held until the row is available: GC never takes a running backup's chunks or
    # its manifest (DESIGN.md 8).
    releasing: list[asyncio.Future] = []  # snapshots being deleted while the final transaction runs
    try:
        async with ctx.index(backup.vault_id) as index:
            if backup.resource_type == "turbo":
                results[backup.backup_id] = await _backup_tree(ctx, backup, keys, index, manifest_suffix)
            else:
                results.update(await _backup_disks(ctx, backup, keys, index, manifest_suffix, releasing))
            async with ctx.make_uow() as uow:
                used = await uow.backups.used_bytes(backup.vault_id)
            check_fits(used, task.params["size_gb"], task.params["auto_expand"])
            await _complete(ctx, backup, results)
    except BaseException:
        await asyncio.gather(*releasing, return_exceptions=True)  # a retry takes its snapshot at the same path
        raise
    for future in releasing:  # final: the worker takes its next job while the deletion ends
        _STILL_RELEASING.add(future)
        future.add_done_callback(_released)


_STILL_RELEASING: set = set()  # a task the loop alone refers to may be collected before it ends


def _released(future: asyncio.Future) -> None:
    _STILL_RELEASING.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.warning("a snapshot could not be deleted", exc_info=future.exception())


async def _backup_disks(ctx: JobContext, backup: Backup, keys, index, suffix: str, releasing: list) -> dict:
    """A disk, or every disk of a server from one snapshot instant, backed up disk by disk. The snapshots are
    deleted on a thread once read (an unlink of a large file took 0.2-0.8 s): `releasing` gets its future."""
    provider = ctx.resources.provider
    parts = backup.children if backup.resource_type == "server" else [backup]
    paths = {p.backup_id: provider.disk_path(backup.project_id, p.resource_id) for p in parts}
    t0 = time.monotonic()
    snapshots = await asyncio.to_thread(_snapshot_all, ctx, backup.backup_id, paths)
    log.info("snapshots taken", extra={"fields": {"task": ctx.task.task_id, "disks": len(snapshots),
                                                  "seconds": round(time.monotonic() - t0, 3)}})
    try:
        ctx.expect(sum(_allocated(s.path) for s in snapshots.values()))
        results = {}
        for part in parts:
            parent, base_id = None, ""
            if backup.incremental:
                parent, base_id = await _parent_manifest(ctx, part, keys, load_manifest)
            result = await asyncio.to_thread(
                backup_disk, snapshots[part.backup_id].path, keys, ctx.store, index, backup.vault_id, parent=parent,
                manifest_id=part.backup_id + suffix, started_time=part.started_time, progress=ctx.progress)
            ctx.part_done()
            log.info("disk backed up", extra={"fields": {"task": ctx.task.task_id, **result.summary()}})
            manifest = result.manifest
            results[part.backup_id] = Part(result.manifest_id, manifest.data_bytes, base_id,
                                           frozenset(manifest.unique_ids()), result.read_bytes)
        return results
    finally:
        releasing.append(asyncio.ensure_future(asyncio.to_thread(_release_all, list(snapshots.values()))))


def _release_all(snapshots: list) -> None:
    for snapshot in snapshots:
        snapshot.release()


def _allocated(path: str) -> int:
    """The bytes a backup of this snapshot reads: its data extents (holes are skipped)."""
    with open(path, "rb") as f:
        return sum(end - start for start, end in data_extents(f.fileno()))


def _snapshot_all(ctx: JobContext, backup_id: str, paths: dict) -> dict:
    """Every disk's snapshot while all their writers are held off: one instant for the whole server."""
    folder = ctx.resources.snapshot_dir
    folder.mkdir(parents=True, exist_ok=True)
    snapshots = {}
    try:
        with ctx.resources.provider.hold_writes(paths.values()):
            for part_id, path in paths.items():
                target = folder / f"{part_id}.raw"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)  # an earlier attempt's leftover
                snapshots[part_id] = take_snapshot(path, target)
    except BaseException:
        for snapshot in snapshots.values():
            snapshot.release()
        raise
    return snapshots


async def _backup_tree(ctx: JobContext, backup: Backup, keys, index, suffix: str) -> Part:
    root = ctx.resources.provider.file_system_path(backup.project_id, backup.resource_id)
    parent, base_id = None, ""
    if backup.incremental:
        parent, base_id = await _parent_manifest(ctx, backup, keys, load_tree_manifest)
    result = await asyncio.to_thread(backup_tree, root, keys, ctx.store, index, backup.vault_id, parent=parent,
                                     manifest_id=backup.backup_id + suffix, started_time=backup.started_time,
                                     progress=ctx.progress)
    return Part(result.manifest_id, result.logical_bytes, base_id, frozenset(result.manifest.chunk_ids()),
                result.read_bytes)


async def _parent_manifest(ctx: JobContext, part: Backup, keys, load):
    """The newest available backup of the same resource in the vault, and its manifest (None if unreadable:
    then this backup reads everything, which is always correct)."""
    async with ctx.make_uow() as uow:
        base = await uow.backups.latest_with_manifest(part.vault_id, part.resource_id, part.manifest_kind)
    if base is None:
        return None, ""
    try:
        return await asyncio.to_thread(load, ctx.store, keys, part.vault_id, base.manifest_id), base.backup_id
    except errors.DataLossError:
        return None, ""


async def _complete(ctx: JobContext, backup: Backup, results: dict) -> None:
    task = ctx.task
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        now = utcnow()
        total_logical = total_stored = 0
        for part_id, part in results.items():
            stored = await uow.backups.stored_bytes_of(backup.vault_id, part.chunk_ids)
            added = await _added_bytes(uow, backup, part.chunk_ids)
            total_logical, total_stored = total_logical + part.logical_bytes, total_stored + stored
            await lifecycle.move_backup(uow, task.project_id, part_id, "available", False,
                                        manifest_id=part.manifest_id, logical_bytes=part.logical_bytes,
                                        stored_bytes=stored, added_bytes=added,
                                        base_backup_id=part.base_backup_id or None,
                                        protected_time=now, incremental=bool(part.base_backup_id))
        incremental = any(p.base_backup_id for p in results.values())  # only changes were read
        # Disks of one server may share chunks: what the whole backup added counts each chunk once.
        total_added = added if len(results) == 1 else await _added_bytes(
            uow, backup, frozenset().union(*(p.chunk_ids for p in results.values())))
        if backup.backup_id not in results:  # a server backup: the parent sums its disks
            await lifecycle.move_backup(uow, task.project_id, backup.backup_id, "available", False,
                                        logical_bytes=total_logical, stored_bytes=total_stored,
                                        added_bytes=total_added, protected_time=now, incremental=incremental)
        done, total = ctx.progress_values()
        await lifecycle.finish(uow, task, "success", bytes_done=done, bytes_total=total, extra_info=dict(
            task.extra_info, read_bytes=str(sum(p.read_bytes for p in results.values())),
            base_backup_id=",".join(sorted({p.base_backup_id for p in results.values()} - {""}))))
        await uow.publish(ev.BackupCompleted(
            project_id=task.project_id, backup_id=backup.backup_id, vault_id=backup.vault_id,
            resource_id=backup.resource_id, resource_type=enum_value(common_pb2.ObjectType, backup.resource_type),
            checkpoint_id=backup.checkpoint_id, auto_trigger=backup.auto_trigger, policy_id=backup.policy_id,
            logical_bytes=total_logical, stored_bytes=total_stored, added_stored_bytes=total_added,
            incremental=incremental,
            image_type=backup.image_type))
        await lifecycle.publish_usage(uow, task.project_id, backup.vault_id)
        await uow.commit()


async def _added_bytes(uow, backup: Backup, chunk_ids) -> int:
    """What the backup added to its vault: its chunks that the index first recorded after it started (an
    earlier attempt's included; a chunk another backup stored first is that backup's)."""
    return await uow.backups.stored_bytes_of(backup.vault_id, chunk_ids, stored_since=backup.started_time)
