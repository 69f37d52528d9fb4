"""Jobs that keep a vault's store honest: delete a backup, collect garbage, verify chunks."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading

from cbr.events.v1 import backup_events_pb2 as ev
from cbr_backup.datapath import records
from cbr_backup.datapath.gc import collect_garbage
from cbr_backup.datapath.verify import VerifyResult, verify_chunks, verify_patched_blocks
from cbr_backup.domain.backups import Backup
from cbr_backup.service import change_bases, lifecycle
from cbr_backup.transfer.namespaces import open_vault_namespaces
from cbr_backup.transfer.repository import TransferRepository
from cbr_backup.transfer.staged import staged_chunk_ids, staging_keys
from cbr_backup.worker import manifests
from cbr_backup.worker.context import JobContext, check_still_mine
from cbr_common.db import utcnow
from cbr_common.errors import DataLossError

log = logging.getLogger("cbr.worker")


def start_removing_stale_temp_files(store) -> threading.Thread:
    """At worker start: deletes the temp files of puts that a killed worker cut off (old ones only, so another
    worker's running put keeps its own). It walks the whole store, so it runs beside the first jobs."""
    def remove() -> None:
        try:
            removed = store.remove_stale_temp_files()
        except Exception:  # noqa: BLE001 - only housekeeping: GC removes them later
            log.warning("removing stale temp files of the chunk store failed", exc_info=True)
            return
        if removed:
            log.info("stale temp files removed", extra={"fields": {"count": removed}})

    thread = threading.Thread(target=remove, name="cbr-stale-temp-files", daemon=True)
    thread.start()
    return thread


async def run_delete(ctx: JobContext) -> None:
    """Marks the backup deleting, collects the vault's garbage at once (grace 0) leaving it out of the live set,
    then drops its rows and tells the others, in one transaction. Without the vault's exclusive lock (a backup is
    running there) GC keeps what a running backup may use; those chunks go at a later GC. Chunks other backups
    use always stay. A retry after a crash finds the backup deleting and does the same again."""
    task = ctx.task
    async with ctx.make_uow() as uow:
        backup = await uow.backups.get_backup(task.project_id, task.backup_id, for_update=True)
        if backup is not None:
            await lifecycle.move_backup(uow, task.project_id, backup.backup_id, "deleting")
        await uow.commit()
    if backup is None:  # its vault was deleted meanwhile
        async with ctx.make_uow() as uow:
            await check_still_mine(uow, task)
            await lifecycle.finish(uow, task, "success")
            await uow.commit()
        return
    family = {backup.backup_id, *(c.backup_id for c in backup.children)}
    try:
        result = await _collect(ctx, backup.vault_id, dt.timedelta(0), leaving_out=family)
        freed = {"freed_bytes": str(result.freed_bytes), "deleted_chunks": str(result.deleted_chunks),
                 "chunks_kept_for_running_backups": str(not result.exclusive).lower()}
    except DataLossError as exc:  # another backup's manifest is unreadable: verify's business, not this delete's
        freed = {"freed_bytes": "0", "gc_skipped": str(exc)[:300]}
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        await uow.backups.delete_family(backup.backup_id)
        await lifecycle.finish(uow, task, "success", extra_info=dict(task.extra_info, **freed))
        await lifecycle.publish_usage(uow, task.project_id, backup.vault_id)
        await uow.publish(ev.BackupDeleted(
            project_id=task.project_id, backup_id=backup.backup_id, vault_id=backup.vault_id,
            freed_stored_bytes=int(freed["freed_bytes"]), auto_trigger=backup.auto_trigger,
            resource_id=backup.resource_id))
        await uow.commit()
    # Once no row names it, its store records go (a rebuild must not bring it back); its manifests go at the next
    # exclusive GC, with any record a crash here left.
    await asyncio.to_thread(_delete_records, ctx.store, backup)
    disks = [b.resource_id for b in backup.children or [backup] if b.manifest_kind == "disk"]
    await change_bases.release_family(ctx.make_uow, ctx.resources.provider, task.project_id, disks)  # DESIGN 16.2


async def run_gc(ctx: JobContext) -> None:
    task = ctx.task
    result = await _collect(ctx, task.vault_id, dt.timedelta(seconds=task.params.get("grace_seconds", 86400)))
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        await lifecycle.finish(uow, task, "success", extra_info=dict(
            task.extra_info, deleted_chunks=str(result.deleted_chunks), freed_bytes=str(result.freed_bytes),
            orphans_deleted=str(result.orphans_deleted), manifests_deleted=str(result.manifests_deleted),
            packs_deleted=str(result.packs_deleted), packs_repacked=str(result.packs_repacked),
            records_deleted=str(result.records_deleted),
            reclaimed_bytes=str(result.reclaimed_bytes), rewritten_bytes=str(result.rewritten_bytes),
            temp_files_deleted=str(result.temp_files_deleted), exclusive=str(result.exclusive).lower(),
            cutoff=result.cutoff.isoformat()))
        await lifecycle.publish_usage(uow, task.project_id, task.vault_id)
        await uow.commit()


async def _collect(ctx: JobContext, vault_id: str, grace: dt.timedelta, leaving_out: set[str] = frozenset()):
    """collect_garbage reads the live backups only once it knows whether it holds the vault's exclusive lock
    (a set read earlier could miss a backup that completed in between), from its thread through this loop."""
    keys = await ctx.keys(vault_id)
    async with ctx.make_uow() as uow:
        namespaces = await open_vault_namespaces(uow, ctx.resources.key_provider, keys, vault_id)
    loop = asyncio.get_running_loop()
    await _expire_transfers(ctx, vault_id)

    async def live_backups():
        async with ctx.make_uow() as uow:
            return [b for b in await uow.backups.vault_backups(vault_id) if b.backup_id not in leaving_out]

    async def oldest_running_start():
        async with ctx.make_uow() as uow:  # an open replica transfer is a running writer (DESIGN.md 17.7)
            starts = (await uow.backups.oldest_running_start(vault_id),
                      await TransferRepository(uow.session).oldest_open_start(vault_id))
        return min((start for start in starts if start is not None), default=None)

    async def open_transfers():
        async with ctx.make_uow() as uow:
            repo = TransferRepository(uow.session)
            return [(t, await repo.staged(t["transfer_id"])) for t in await repo.open_transfers(vault_id)]

    def read(coroutine_function):
        return asyncio.run_coroutine_threadsafe(coroutine_function(), loop).result()

    def live_chunk_ids():
        for backup in read(live_backups):
            yield from manifests.chunk_sizes(manifests.load(ctx.store, keys, backup))
        for transfer, staged in read(open_transfers):  # the chunks an open transfer's manifests need stay
            yield from staged_chunk_ids(ctx.store, keys, transfer, staged)

    async with ctx.index() as index:
        return await asyncio.to_thread(
            collect_garbage, index, ctx.store, vault_id, live_chunk_ids,
            live_manifest_ids=lambda: {b.manifest_id for b in read(live_backups)}, grace=grace,
            oldest_running_start=lambda: read(oldest_running_start), keys=keys, namespace_keys=namespaces)


async def _expire_transfers(ctx: JobContext, vault_id: str) -> None:
    """Replica transfers idle for CBR_REPLICATION_TRANSFER_TTL_HOURS are aborted; the staging of transfers no longer open goes (their
    chunks and packs are then ordinary unreferenced chunks and orphans, DESIGN.md 17.7 step 7)."""
    staged = await asyncio.to_thread(staging_keys, ctx.store, vault_id)
    async with ctx.make_uow() as uow:
        repo = TransferRepository(uow.session)
        await repo.expire_idle(vault_id, utcnow() - dt.timedelta(hours=ctx.resources.transfer_ttl_hours))
        open_ids = {t["transfer_id"] for t in await repo.open_transfers(vault_id)}
        await uow.commit()
    stale = [key for transfer_id, keys in staged.items() if transfer_id not in open_ids for key in keys]
    await asyncio.to_thread(lambda: [ctx.store.delete(key) for key in stale])


async def run_verify(ctx: JobContext) -> None:
    """Re-reads every chunk the chosen backups need; backups that need a bad one are marked corrupt (their
    server backup too) and bad chunks are quarantined, so the next backup stores them again. Patched blocks are
    then put together from their base and patch and checked against their ids: a backup with one that does
    not come out whole is corrupt too (a bad manifest entry: no chunk is quarantined for it)."""
    task = ctx.task
    async with ctx.make_uow() as uow:
        chosen = await uow.backups.vault_backups(task.vault_id, ("available",), task.params.get("backup_ids", []))
    # Replicas name their chunks with their namespace's id key: each namespace is verified with its own keys.
    by_namespace: dict[str, list[Backup]] = {}
    for backup in chosen:
        by_namespace.setdefault(backup.namespace_id, []).append(backup)
    needs: dict[str, set[bytes]] = {}
    patched: dict[str, set] = {}  # backup id -> its patched blocks' (id, patch)
    unreadable: list[Backup] = []
    results = []
    bad_blocks: dict = {}
    for members in by_namespace.values():
        keys = await ctx.backup_keys(members[0])
        sizes: dict[bytes, int] = {}
        blocks: dict = {}
        for backup in members:
            try:
                found, mine = await asyncio.to_thread(lambda b=backup: _what_it_needs(manifests.load(ctx.store, keys, b)))
            except DataLossError:  # the manifest itself is missing or damaged
                unreadable.append(backup)
                continue
            sizes.update(found)
            needs[backup.backup_id] = set(found)
            blocks.update(mine)
            patched[backup.backup_id] = set(mine)
        async with ctx.index(task.vault_id) as index:  # shared: GC does not repack (move chunks) while we read
            results.append(await asyncio.to_thread(verify_chunks, index, ctx.store, keys, task.vault_id, list(sizes),
                                                   raw_sizes=sizes, progress=ctx.progress))
            bad_chunks = results[-1].bad_chunks
            sound = {entry: length for entry, length in blocks.items()  # a bad chunk is reported already
                     if entry[1].base not in bad_chunks and entry[1].chunk not in bad_chunks}
            if sound:
                bad_blocks.update(await asyncio.to_thread(verify_patched_blocks, index, ctx.store, keys,
                                                          task.vault_id, sound))
    for (block_id, _), problem in bad_blocks.items():
        log.error("patched block %s does not come out whole: %s", block_id.hex(), problem)
    result = _merged(results)
    bad = set(result.bad_chunks)
    corrupt = {b.backup_id for b in unreadable} | {bid for bid, ids in needs.items() if ids & bad} \
        | {bid for bid, ids in patched.items() if ids & bad_blocks.keys()}
    now = utcnow()
    async with ctx.make_uow() as uow:
        await check_still_mine(uow, task)
        for backup in chosen:
            await uow.backups.update_backup(backup.backup_id, verified_time=now,
                                            **({"corrupt": True} if backup.backup_id in corrupt else {}))
            if backup.backup_id in corrupt and backup.parent_id:
                await uow.backups.update_backup(backup.parent_id, corrupt=True)
        await lifecycle.finish(uow, task, "success", extra_info=dict(
            task.extra_info, checked_chunks=str(result.checked_chunks), bad_chunks=str(len(bad)),
            bad_patched_blocks=str(len(bad_blocks)), quarantined=str(result.quarantined),
            corrupt_backups=",".join(sorted(corrupt))))
        await lifecycle.publish_usage(uow, task.project_id, task.vault_id)
        await uow.commit()



def _what_it_needs(manifest) -> tuple[dict, dict]:
    """A manifest's chunks (id -> raw size) and patched blocks ((id, patch) -> length)."""
    return manifests.chunk_sizes(manifest), manifests.patched_blocks(manifest)


def _merged(results: list) -> VerifyResult:
    bad: dict[bytes, str] = {}
    for r in results:
        bad.update(r.bad_chunks)
    return VerifyResult(sum(r.checked_chunks for r in results), bad, sum(r.quarantined for r in results),
                        sum(r.seconds for r in results))


async def run_vault_delete(ctx: JobContext) -> None:
    """Deletes every backup of a deleted vault, its chunks (rows and store keys), its key and checkpoints,
    then tells the vault service it may drop the vault. The vault's other jobs are cancelled first, and the
    purge waits for the vault's exclusive lock, so no backup still writes there. A retry after a crash
    purges what is left and counts what the task recorded."""
    task = ctx.task
    async with ctx.make_uow() as uow:
        for other in await uow.tasks.open_for_vault(task.vault_id):
            if other.task_id == task.task_id:
                continue
            if other.status == "waiting":
                await lifecycle.cancel_in(uow, other)
            else:
                await lifecycle.request_cancel(uow, other)
        await uow.commit()
    async with ctx.index() as index:
        await asyncio.to_thread(index.lock_vault, task.vault_id, True, True)  # running backups stop, then this
        async with ctx.make_uow() as uow:
            backups = await uow.backups.vault_top_level(task.vault_id)
            for backup in backups:
                await uow.backups.delete_family(backup.backup_id)
            total = int(task.extra_info.get("total_count", "0")) + len(backups)
            await uow.tasks.update_fields(task.task_id, extra_info=dict(task.extra_info, total_count=str(total)))
            await uow.commit()
        await asyncio.to_thread(_delete_prefix, ctx.store, f"{task.vault_id}/")
        async with ctx.make_uow() as uow:
            await check_still_mine(uow, task)
            await uow.backups.forget_vault(task.vault_id)  # chunk rows, key, checkpoints
            await lifecycle.finish(uow, task, "success", extra_info=dict(
                task.extra_info, fail_count="0", total_count=str(total)))
            await uow.publish(ev.VaultBackupsPurged(
                project_id=task.project_id, vault_id=task.vault_id, task_id=task.task_id, deleted_count=total,
                failed_count=0))
            await uow.commit()


def _delete_records(store, backup: Backup) -> None:
    for part in backup.children or [backup]:
        if part.manifest_id:
            store.delete(records.record_key(part.vault_id, part.manifest_id))


def _delete_prefix(store, prefix: str) -> None:
    for key in list(store.iterate(prefix)):
        store.delete(key)
