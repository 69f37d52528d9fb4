"""Garbage collection of one vault's chunks: mark what live manifests name, sweep the rest, then orphans.

The rules and why they are safe beside running backups are in DESIGN.md, "Garbage collection"; this module
is their implementation. The caller (the GC job) knows which backups are live and running; this code knows
the index, the store and the vault lock.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from cbr_backup.datapath.disk_backup import TOUCH_MARGIN

MARK_BATCH = 16384   # distinct live ids per mark call (the index splits it into statements of its batch size)
ORPHAN_BATCH = 1000  # store keys per index lookup while looking for orphans
_CHUNK_NAME = re.compile(r"[0-9a-f]{64}")  # what chunk_key() writes; any other name is left alone


@dataclass(frozen=True)
class GcResult:
    marked: int             # live rows whose last_referenced_time the mark moved (rows already past the cutoff
                            # are left as they are)
    deleted_chunks: int     # indexed chunks swept (row and store key)
    freed_bytes: int        # the swept rows' stored sizes
    orphans_deleted: int    # chunk keys without an index row (only with the exclusive lock)
    manifests_deleted: int  # manifest keys that are not live (only with the exclusive lock)
    temp_files_deleted: int  # temp files of puts cut off by a crash (older than the store's safe age)
    exclusive: bool         # whether GC held the vault's lock exclusively (no backup of the vault running)
    cutoff: dt.datetime     # rows last referenced before this were swept
    seconds: float

    def summary(self) -> dict:
        return {"marked": self.marked, "deleted_chunks": self.deleted_chunks, "freed_bytes": self.freed_bytes,
                "orphans_deleted": self.orphans_deleted, "manifests_deleted": self.manifests_deleted,
                "temp_files_deleted": self.temp_files_deleted, "exclusive": self.exclusive,
                "cutoff": self.cutoff.isoformat(), "seconds": round(self.seconds, 3)}


def gc_cutoff(gc_start: dt.datetime, grace: dt.timedelta, exclusive: bool,
              oldest_running_start: dt.datetime | None) -> dt.datetime:
    """The sweep's cutoff: rows last referenced before it are deleted.

    With the vault's lock held exclusively no backup of the vault is running (each holds the lock shared
    from before its first index call until its row is final), and one that starts now waits for GC to end:
    gc_start - grace.

    Without it, backups are running. Every row a running backup relies on has last_referenced_time >= its
    start - TOUCH_MARGIN: it either came back from a lookup that touched it to at least that (the touch
    rewrites rows older than start - margin), or the backup inserted it with now(), after its start. Hence
    oldest_running_start - TOUCH_MARGIN. A backup starting after gc_start relies only on rows >= its start -
    margin > gc_start - margin, hence gc_start - max(grace, TOUCH_MARGIN). A row's time only ever moves
    forward, so once a row is past the cutoff it stays past it.
    """
    if grace < dt.timedelta(0):
        raise ValueError("grace must not be negative")
    if exclusive:
        return gc_start - grace
    cutoff = gc_start - max(grace, TOUCH_MARGIN)
    if oldest_running_start is not None:
        cutoff = min(cutoff, oldest_running_start - TOUCH_MARGIN)
    return cutoff


def collect_garbage(index, store, vault_id: str, live_chunk_ids: Callable[[], Iterable[bytes]], *,
                    live_manifest_ids: Collection[str] | Callable[[], Iterable[str]], grace: dt.timedelta,
                    oldest_running_start: dt.datetime | None | Callable[[], dt.datetime | None],
                    now: dt.datetime | None = None) -> GcResult:
    """Collects the vault's garbage: unreferenced chunks always, orphans and dead manifests when no backup runs.

    live_chunk_ids: yields every chunk id named by a live manifest (a backup row that is available, or was
    deleted less than the grace ago); called once, after the lock attempt and after oldest_running_start is
    known, so a backup that completed before that point is marked. Streamed: ids are marked in batches.
    live_manifest_ids: the live backups' manifest ids; only used with the exclusive lock, and if callable it
    is called while that lock is held (a plain set read earlier misses a backup that completed meanwhile,
    whose manifest would then be deleted).
    oldest_running_start: the start (by the index's clock) of the vault's oldest backup still running, None if
    none. It must be read after gc_start: pass a callable, or pass now= taken before reading it; otherwise a
    backup that started between the two is covered by neither term of the cutoff.
    now: GC's start, an earlier reading of index.now() (the default is to read it here). Never a time ahead of
    the index's clock: the mark stamps rows with the index's now(), which must not be older than the cutoff.
    """
    t0 = time.perf_counter()
    clock = index.now()
    if now is not None and now > clock:
        raise ValueError("now is ahead of the index's clock: marked rows would fall before the cutoff")
    gc_start = now if now is not None else clock
    exclusive = index.lock_vault(vault_id, exclusive=True, wait=False)
    try:
        oldest = oldest_running_start() if callable(oldest_running_start) else oldest_running_start
        cutoff = gc_cutoff(gc_start, grace, exclusive, oldest)
        marked = _mark(index, vault_id, live_chunk_ids(), cutoff)
        deleted, freed = index.sweep(vault_id, cutoff, store)
        orphans = manifests = 0
        if exclusive:  # orphans are unsafe to judge while a backup may be between a put and its index insert
            orphans = _delete_orphan_chunks(index, store, vault_id)
            live = live_manifest_ids() if callable(live_manifest_ids) else live_manifest_ids
            manifests = _delete_dead_manifests(store, vault_id, set(live))
        # Age, not the lock, keeps a running put's temp file safe: so this runs whether or not backups run.
        temps = store.remove_stale_temp_files(f"{vault_id}/")
        store.flush()  # deletes need no barrier (a lost one only brings back garbage); harmless
    finally:
        if exclusive:
            index.unlock_vault(vault_id, exclusive=True)
    return GcResult(marked=marked, deleted_chunks=deleted, freed_bytes=freed, orphans_deleted=orphans,
                    manifests_deleted=manifests, temp_files_deleted=temps, exclusive=exclusive, cutoff=cutoff,
                    seconds=time.perf_counter() - t0)


def _mark(index, vault_id: str, ids: Iterable[bytes], cutoff: dt.datetime) -> int:
    # Rows at or past the cutoff are safe from this sweep already: not rewriting them keeps the mark of a
    # vault that backs up daily (its backups touch everything they reuse) down to a few writes.
    marked = 0
    pending: set[bytes] = set()
    for chunk in ids:
        pending.add(chunk)
        if len(pending) >= MARK_BATCH:
            marked += index.mark(vault_id, pending, since=cutoff)
            pending = set()
    if pending:
        marked += index.mark(vault_id, pending, since=cutoff)
    return marked


def _delete_orphan_chunks(index, store, vault_id: str) -> int:
    """Deletes chunk keys that have no index row (leftovers of interrupted backups and of lost deletes)."""
    prefix = f"{vault_id}/chunks/"
    deleted = 0
    batch: dict[bytes, str] = {}
    for key in store.iterate(prefix):
        name = key[len(prefix):]
        if _CHUNK_NAME.fullmatch(name):
            batch[bytes.fromhex(name)] = key
        if len(batch) >= ORPHAN_BATCH:
            deleted += _delete_unindexed(index, store, vault_id, batch)
            batch = {}
    if batch:
        deleted += _delete_unindexed(index, store, vault_id, batch)
    return deleted


def _delete_unindexed(index, store, vault_id: str, keys: dict[bytes, str]) -> int:
    indexed = index.sizes(vault_id, keys)
    orphans = [key for chunk, key in keys.items() if chunk not in indexed]
    for key in orphans:
        store.delete(key)
    return len(orphans)


def _delete_dead_manifests(store, vault_id: str, live: set[str]) -> int:
    prefix = f"{vault_id}/manifests/"
    dead = [key for key in store.iterate(prefix) if key[len(prefix):] not in live]
    for key in dead:
        store.delete(key)
    return len(dead)
