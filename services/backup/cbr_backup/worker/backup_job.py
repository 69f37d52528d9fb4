"""The backup job: snapshot, back up each disk (or the file tree), then flip the rows to available.

Disks are read only through the provider's interface (providers/base.py): a snapshot set of one instant, the
extents changed since the disk's retained base, a reader per snapshot. After the commit the new snapshots are
the disks' bases and the older ones are released; a failed job releases its own (service/change_bases.py).

Order: the data path makes every chunk and the manifest durable first (DESIGN.md 6.1); only then does one
transaction set the backup (and a server's per-disk backups) available with its manifest, finish the task,
free the resource and publish BackupCompleted and the vault's usage. Until that commit no reader sees the
backup as available, and a retry after a crash starts over with a fresh manifest id, reusing the chunks.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from cbr.common.v1 import common_pb2
from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.datapath import backup_disk, load_manifest
from cbr_backup.datapath.tree_backup import backup_tree, load_tree_manifest
from cbr_backup.domain import errors
from cbr_backup.domain.backups import Backup, check_fits, check_room
from cbr_backup.service import change_bases, lifecycle
from cbr_backup.worker.backup_records import write_backup_records
from cbr_backup.worker.context import JobCancelled, JobContext, JobSuperseded, check_still_mine
from cbr_common import metrics
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
    patched_blocks: int = 0  # a disk's changed blocks stored as patches of their parent's (DESIGN.md 3.1)
    # The stored size of every chunk it references when it wrote each of them itself (a disk's full backup of
    # data the vault did not have), else None: then the index sums them.
    stored_bytes: int | None = None


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
    snapshots: list = []  # this job's, filled as they are taken
    try:
        async with ctx.index(backup.vault_id) as index:
            if backup.resource_type == "turbo":
                results[backup.backup_id] = await _backup_tree(ctx, backup, keys, index, manifest_suffix)
            else:
                results.update(await _backup_disks(ctx, backup, keys, index, manifest_suffix, snapshots))
            async with ctx.make_uow() as uow:
                used = await uow.backups.used_bytes(backup.vault_id)
            check_fits(used, task.params["size_gb"], task.params["auto_expand"])
            await _complete(ctx, backup, results, keys)
    except JobSuperseded:
        raise  # another worker runs this backup now, under the same snapshot names: they are its
    except BaseException:
        # Not a base (the row never became available): none may stay. A kill -9 runs no code: the retry, or the
        # disk's next backup, releases what it left (change_bases.keep_only_bases).
        await change_bases.release_all(ctx.resources.provider, task.project_id, snapshots)
        raise
    if snapshots:
        await change_bases.rebase(ctx.make_uow, ctx.resources.provider, task.project_id, snapshots)


async def _backup_disks(ctx: JobContext, backup: Backup, keys, index, suffix: str, taken: list) -> dict:
    """A disk, or every disk of a server from one snapshot instant, backed up disk by disk. Blocks outside the
    extents the provider says changed since the base backup's snapshot are taken from its manifest unread."""
    provider, project_id = ctx.resources.provider, backup.project_id
    parts = backup.children if backup.resource_type == "server" else [backup]
    retained = 0
    for part in parts:  # leftovers of cut-off jobs and superseded bases go before the new snapshot
        await change_bases.keep_only_bases(ctx.make_uow, provider, project_id, part.resource_id,
                                           running=part.backup_id)
        retained += await provider.retained_bytes(project_id, part.resource_id)
    # What the disks' bases held in the pool by now (the blocks rewritten since): their cost, on the task.
    ctx.task.extra_info = dict(ctx.task.extra_info, retained_snapshot_bytes=str(retained))
    t0 = time.monotonic()
    snapshots = await provider.snapshot_disks(project_id, {p.backup_id: p.resource_id for p in parts})
    taken.extend(snapshots.values())
    log.info("snapshots taken", extra={"fields": {"task": ctx.task.task_id, "disks": len(snapshots),
                                                  "seconds": round(time.monotonic() - t0, 3)}})
    ctx.expect(sum(s.allocated_bytes for s in snapshots.values()))
    results = {}
    for part in parts:
        snapshot = snapshots[part.backup_id]
        parent, base_id, changed = None, "", None
        if backup.incremental:
            parent, base_id = await _parent_manifest(ctx, part, keys, load_manifest)
            if parent is not None:
                changed = await provider.changed_extents(project_id, snapshot, base_id)
        reader = await provider.open_snapshot(snapshot)
        try:
            result = await asyncio.to_thread(
                backup_disk, reader, keys, ctx.store, index, backup.vault_id, parent=parent, changed=changed,
                manifest_id=part.backup_id + suffix, started_time=part.started_time, progress=ctx.progress)
        finally:
            reader.close()
        ctx.part_done()
        log.info("disk backed up", extra={"fields": {"task": ctx.task.task_id, "changes_known": changed is not None,
                                                     **result.summary()}})
        manifest = result.manifest
        referenced = frozenset(manifest.unique_ids())
        # What it wrote is all in the manifest, once each: as many chunks written as referenced means all of them.
        wrote_all = result.new_chunks == len(referenced)
        results[part.backup_id] = Part(result.manifest_id, manifest.data_bytes, base_id, referenced,
                                       result.read_bytes, result.patched_blocks,
                                       result.new_stored_bytes if wrote_all else None)
    return results


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


async def _complete(ctx: JobContext, backup: Backup, results: dict, keys) -> None:
    task = ctx.task
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        now = utcnow()
        total_logical = total_stored = 0
        for part_id, part in results.items():
            if part.stored_bytes is not None:  # all written by this backup, since it started: no sums over the ids
                stored = added = part.stored_bytes
            else:
                stored, added = await uow.backups.stored_bytes_of(backup.vault_id, part.chunk_ids,
                                                                  backup.started_time)
            total_logical, total_stored = total_logical + part.logical_bytes, total_stored + stored
            await lifecycle.move_backup(uow, task.project_id, part_id, "available", False,
                                        manifest_id=part.manifest_id, logical_bytes=part.logical_bytes,
                                        stored_bytes=stored, added_bytes=added,
                                        base_backup_id=part.base_backup_id or None,
                                        protected_time=now, incremental=bool(part.base_backup_id))
        incremental = any(p.base_backup_id for p in results.values())  # only changes were read
        # Disks of one server may share chunks: what the whole backup added counts each chunk once.
        total_added = added if len(results) == 1 else (await uow.backups.stored_bytes_of(
            backup.vault_id, frozenset().union(*(p.chunk_ids for p in results.values())), backup.started_time))[1]
        if backup.backup_id not in results:  # a server backup: the parent sums its disks
            await lifecycle.move_backup(uow, task.project_id, backup.backup_id, "available", False,
                                        logical_bytes=total_logical, stored_bytes=total_stored,
                                        added_bytes=total_added, protected_time=now, incremental=incremental)
        done, total = ctx.progress_values()
        await lifecycle.finish(uow, task, "success", bytes_done=done, bytes_total=total, extra_info=dict(
            task.extra_info, read_bytes=str(sum(p.read_bytes for p in results.values())),
            patched_blocks=str(sum(p.patched_blocks for p in results.values())),
            base_backup_id=",".join(sorted({p.base_backup_id for p in results.values()} - {""}))))
        await uow.publish(ev.BackupCompleted(
            project_id=task.project_id, backup_id=backup.backup_id, vault_id=backup.vault_id,
            resource_id=backup.resource_id, resource_type=enum_value(common_pb2.ObjectType, backup.resource_type),
            checkpoint_id=backup.checkpoint_id, auto_trigger=backup.auto_trigger, policy_id=backup.policy_id,
            logical_bytes=total_logical, stored_bytes=total_stored, added_stored_bytes=total_added,
            incremental=incremental,
            image_type=backup.image_type))
        await lifecycle.publish_usage(uow, task.project_id, backup.vault_id)
        # The store's record of the backup (DESIGN.md 14), durable before the commit makes it available.
        await write_backup_records(uow, ctx.store, keys, ctx.run_id, task.project_id, backup.backup_id)
        uow.after_commit(lambda: metrics.backup_stored(sum(p.read_bytes for p in results.values()), total_logical,
                                                       total_added))
        await uow.commit()
