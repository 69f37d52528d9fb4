"""Garbage collection of one vault's chunks: mark what live manifests name, sweep the rest, then orphans.

The rules and why they are safe beside running backups are in DESIGN.md, "Garbage collection"; this module
is their implementation. The caller (the GC job) knows which backups are live and running; this code knows
the index, the store and the vault lock.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from cbr_backup.datapath import packs as packfiles
from cbr_backup.datapath import records as recordfiles
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.disk_backup import TOUCH_MARGIN
from cbr_backup.datapath.errors import ChunkCorruptError

MARK_BATCH = 16384   # distinct live ids per mark call (the index splits it into statements of its batch size)
ORPHAN_BATCH = 1000  # store keys per index lookup while looking for orphans
_CHUNK_NAME = re.compile(r"[0-9a-f]{64}")  # what chunk_key() writes; any other name is left alone
_PACK_NAME = re.compile(r"[0-9a-f]{32}")   # what pack_key() writes
DEFAULT_REPACK_BELOW = 0.5


def repack_below() -> float:
    """CBR_REPACK_BELOW (default 0.5): a pack whose live fraction falls under it is repacked (DESIGN.md 13.4)."""
    value = float(os.environ.get("CBR_REPACK_BELOW", DEFAULT_REPACK_BELOW))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"CBR_REPACK_BELOW must be within 0-1, not {value}")
    return value


def _repack_step(step: str) -> None:
    """Called between the steps of a repack ("new packs durable", "rows moved"); the crash tests stop here."""


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
    packs_deleted: int = 0     # packs no row named any more (DESIGN.md 13.4)
    packs_repacked: int = 0    # packs whose live chunks were copied to new packs, then deleted
    reclaimed_bytes: int = 0   # store bytes given back: lone chunks swept, packs deleted
    rewritten_bytes: int = 0   # chunk bytes copied by repacking
    records_deleted: int = 0   # backup records whose manifest is not live (DESIGN.md 14; exclusive lock only)

    def summary(self) -> dict:
        return {"marked": self.marked, "deleted_chunks": self.deleted_chunks, "freed_bytes": self.freed_bytes,
                "orphans_deleted": self.orphans_deleted, "manifests_deleted": self.manifests_deleted,
                "temp_files_deleted": self.temp_files_deleted, "exclusive": self.exclusive,
                "cutoff": self.cutoff.isoformat(), "seconds": round(self.seconds, 3),
                "packs_deleted": self.packs_deleted, "packs_repacked": self.packs_repacked,
                "reclaimed_bytes": self.reclaimed_bytes, "rewritten_bytes": self.rewritten_bytes,
                "records_deleted": self.records_deleted}


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
                    now: dt.datetime | None = None, keys: VaultKeys | None = None,
                    namespace_keys: Sequence[VaultKeys] = (),
                    repack_fraction: float | None = None) -> GcResult:
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
    keys: the vault's keys; with them (and the exclusive lock) packs whose live fraction is under repack_fraction
    (default CBR_REPACK_BELOW) are repacked. Packs without live rows are deleted either way (DESIGN.md 13.4).
    namespace_keys: a replication vault's namespaces' keys (DESIGN.md 17.3), so repacking checks their chunks too.
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
        had_rows, lone_before = set(index.pack_usage(vault_id)), index.lone_bytes(vault_id)
        deleted, freed = index.sweep(vault_id, cutoff, store)
        usage = index.pack_usage(vault_id)
        lone_freed = lone_before - index.lone_bytes(vault_id)  # new rows always name a pack
        orphans = manifests = records = 0
        # A pack that had rows and has none now is dead whoever runs: the backup that wrote it inserted them.
        dead = [p for p in had_rows if p not in usage]
        if exclusive:  # orphans are unsafe to judge while a backup may be between a put and its index insert
            orphans = _delete_orphan_chunks(index, store, vault_id)
            live = live_manifest_ids() if callable(live_manifest_ids) else live_manifest_ids
            live = set(live)
            manifests = _delete_dead_manifests(store, vault_id, live)
            records = _delete_dead(store, recordfiles.records_prefix(vault_id), live)  # records go with manifests
            dead = [p for p in _stored_packs(store, vault_id) if p not in usage]  # orphan packs too
        packs_deleted, reclaimed = _delete_packs(store, vault_id, dead)
        repacked = rewritten = 0
        if exclusive and keys is not None:
            fraction = repack_below() if repack_fraction is None else repack_fraction
            repacked, rewritten, freed_by_repack = _repack(index, store, keys, vault_id, usage, fraction,
                                                           namespace_keys)
            reclaimed += freed_by_repack
        # Age, not the lock, keeps a running put's temp file safe: so this runs whether or not backups run.
        temps = store.remove_stale_temp_files(f"{vault_id}/")
        store.flush()  # deletes need no barrier (a lost one only brings back garbage); harmless
    finally:
        if exclusive:
            index.unlock_vault(vault_id, exclusive=True)
    return GcResult(marked=marked, deleted_chunks=deleted, freed_bytes=freed, orphans_deleted=orphans,
                    manifests_deleted=manifests, temp_files_deleted=temps, exclusive=exclusive, cutoff=cutoff,
                    seconds=time.perf_counter() - t0, packs_deleted=packs_deleted, packs_repacked=repacked,
                    reclaimed_bytes=lone_freed + reclaimed, rewritten_bytes=rewritten, records_deleted=records)


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
    return _delete_dead(store, f"{vault_id}/manifests/", live)


def _delete_dead(store, prefix: str, live: set[str]) -> int:
    """Deletes the keys under prefix whose name (a manifest id) is not live."""
    dead = [key for key in store.iterate(prefix) if key[len(prefix):] not in live]
    for key in dead:
        store.delete(key)
    return len(dead)


# Packs (DESIGN.md 13.4)

def _stored_packs(store, vault_id: str) -> list[bytes]:
    prefix = packfiles.pack_prefix(vault_id)
    names = (key[len(prefix):] for key in store.iterate(prefix))
    return [bytes.fromhex(name) for name in names if _PACK_NAME.fullmatch(name)]


def _delete_packs(store, vault_id: str, pack_ids: Iterable[bytes]) -> tuple[int, int]:
    deleted = freed = 0
    for pack_id in pack_ids:
        key = packfiles.pack_key(vault_id, pack_id)
        freed += packfiles.pack_size(store, key)
        store.delete(key)
        deleted += 1
    return deleted, freed


def _sound(codecs: list[ChunkCodec], value: bytes, chunk: bytes, raw: int) -> bool:
    for codec in codecs:
        try:
            codec.decode(value, chunk, raw)
            return True
        except ChunkCorruptError:
            continue
    return False


def _repack(index, store, keys: VaultKeys, vault_id: str, usage: dict[bytes, tuple[int, int]],
            fraction: float, namespace_keys: Sequence[VaultKeys] = ()) -> tuple[int, int, int]:
    """Copies the live chunks of sparse packs into new packs; only the exclusive lock's holder calls this.

    Order: new packs put and flushed, then each old pack's rows moved in one transaction, then the old pack
    deleted. A crash anywhere leaves every row naming a durable pack that holds its chunk; what is left over
    (a new pack no row names, an old pack no row names) is a dead pack the next exclusive GC deletes.
    Returns (packs repacked, bytes rewritten, bytes freed)."""
    sparse = []
    for pack_id, (_rows, live) in usage.items():
        size = packfiles.pack_size(store, packfiles.pack_key(vault_id, pack_id))
        data = size - packfiles.FOOTER_SIZE  # the trailer is counted as dead weight, as it is
        if size and live < fraction * data:
            sparse.append((pack_id, size))
    if not sparse:
        return 0, 0, 0
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
    # A replication vault's chunks are named by their namespace's id key (DESIGN.md 17.3): a chunk is sound if one
    # of the vault's keys checks it (every codec seals with the vault's data key, so the new pack is the vault's).
    checks = [codec, *(ChunkCodec(k, dictionaries=VaultDictionaries(store, vault_id, k).by_tag)
                       for k in namespace_keys)]
    source = packfiles.ChunkSource(store, codec, vault_id)
    writer = packfiles.PackWriter(store, codec, vault_id)
    origin: dict[bytes, bytes] = {}  # chunk -> the old pack it is copied from
    rewritten = 0
    for pack_id, _size in sparse:
        rows = index.pack_rows(vault_id, pack_id)
        values = source.read_pack(pack_id, sorted((offset, stored, chunk) for chunk, _raw, offset, stored in rows))
        for chunk, raw, _offset, _stored in rows:
            value = values.get(chunk)
            if not _sound(checks, value or b"", chunk, raw):
                continue  # a bad chunk stays where it is: verify's business, and the old pack keeps a row
            if writer.add(chunk, raw, value):
                origin[chunk] = pack_id
                rewritten += len(value)
    writer.close()
    store.flush()
    _repack_step("new packs durable")
    moves: dict[tuple[bytes, bytes], dict[bytes, int]] = defaultdict(dict)
    for chunk, _raw, _stored, new_pack, offset in writer.take_rows():
        moves[(origin[chunk], new_pack)][chunk] = offset
    for (old, new), offsets in moves.items():
        index.move_to_pack(vault_id, old, new, offsets)
    _repack_step("rows moved")
    still = index.pack_usage(vault_id)
    emptied = [pack_id for pack_id, _size in sparse if pack_id not in still]
    _deleted, freed = _delete_packs(store, vault_id, emptied)
    return len(emptied), rewritten, freed - writer.bytes_written
