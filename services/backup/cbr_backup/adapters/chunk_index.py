"""The chunk index (backup.chunks): which chunks a vault's store holds, looked up and upserted in batches.

The data path runs on threads, so this adapter is synchronous: one psycopg 3 connection in autocommit mode
(each batch is one statement, hence its own transaction), shared by the pipeline's threads under a lock.
A backup makes O(disk size / buffer size) lookups and O(new chunks / batch) inserts, never one per chunk;
running them through the service's async engine would only add an event loop hop to every batch.

Why "touch" is part of the lookup: GC deletes a chunk only if nobody referenced it since its cutoff, which is
never later than the oldest running backup's start minus the touch margin (DESIGN.md, "Garbage collection").
A backup that reuses a chunk must therefore move its last_referenced_time past that cutoff before relying on
it. Rows touched recently enough (at or after `since`, which the caller sets to its start minus the margin)
are not rewritten, so an incremental backup soon after the previous one writes almost nothing.

Garbage collection (datapath/gc.py) and verification (datapath/verify.py) use the rest: the vault's advisory
lock (backups hold it shared, GC tries it exclusively), mark, and the sweep, the one place that needs a wider
transaction than a statement: it deletes store keys while it holds the row locks of the rows it deletes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Protocol, Sequence

BATCH_SIZE = 4096
TOUCH_MARGIN = dt.timedelta(hours=1)  # must stay below GC's grace period (DESIGN.md)

# Arrays of ids travel in binary (%b): psycopg's text form escapes every element with a regular expression, which
# under a busy pipeline cost more CPU than the lookups themselves (DESIGN.md 10.3).
# Two statements, no join: a join's plan depends on row estimates, and right after a new vault's first
# backup the statistics say the vault has no rows (a nested loop over it cost 4 s per batch). Both
# statements scan by the primary key (or, with stale statistics, the vault's rows with a hashed filter).
# Sent in one pipeline, so a batch is still one round trip.
_TOUCH_SQL = """
UPDATE backup.chunks SET last_referenced_time = now()
WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b) AND last_referenced_time < %(since)s
"""
_FOUND_SQL = "SELECT digest FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b)"

# An existing row keeps its location (it names a durable value already); the new copy is dead space in its pack.
_RECORD_SQL = """
INSERT INTO backup.chunks (vault_id, digest, raw_size, stored_size, created_time, last_referenced_time,
                           pack_id, pack_offset)
SELECT %(vault)s, t.digest, t.raw_size, t.stored_size, now(), now(), t.pack_id, t.pack_offset
FROM unnest(%(ids)b::bytea[], %(raw)s::int[], %(stored)s::int[], %(packs)b::bytea[], %(offsets)s::bigint[])
     AS t(digest, raw_size, stored_size, pack_id, pack_offset)
ON CONFLICT (vault_id, digest) DO UPDATE SET last_referenced_time = now()
"""
_LOCATIONS_SQL = """
SELECT digest, pack_id, pack_offset, stored_size FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b)
"""
# Packs (DESIGN.md 13.4)
_PACK_USAGE_SQL = """
SELECT pack_id, count(*), COALESCE(SUM(stored_size), 0)::bigint FROM backup.chunks
WHERE vault_id = %(vault)s AND pack_id IS NOT NULL GROUP BY pack_id
"""
_LONE_BYTES_SQL = """
SELECT COALESCE(SUM(stored_size), 0)::bigint FROM backup.chunks WHERE vault_id = %s AND pack_id IS NULL
"""
_PACK_ROWS_SQL = """
SELECT digest, raw_size, pack_offset, stored_size FROM backup.chunks WHERE vault_id = %(vault)s AND pack_id = %(pack)s
"""
_MOVE_SQL = """
UPDATE backup.chunks AS c SET pack_id = %(new)s, pack_offset = t.pack_offset
FROM unnest(%(ids)b::bytea[], %(offsets)s::bigint[]) AS t(digest, pack_offset)
WHERE c.vault_id = %(vault)s AND c.pack_id = %(old)s AND c.digest = t.digest
"""

# Garbage collection and verification (DESIGN.md, "Garbage collection")
_MARK_SQL = """
UPDATE backup.chunks SET last_referenced_time = now()
WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b) AND last_referenced_time < %(since)s
"""
_MARK_ALL_SQL = """
UPDATE backup.chunks SET last_referenced_time = now() WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b)
"""
_USED_SQL = "SELECT COALESCE(SUM(stored_size), 0)::bigint FROM backup.chunks WHERE vault_id = %s"
_SIZES_SQL = "SELECT digest, raw_size FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b)"
_DELETE_SQL = "DELETE FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b)"
# Keyset pagination in primary-key order; FOR UPDATE re-checks the time on the row version it locks (a touch
# that committed meanwhile makes the row no longer match) and SKIP LOCKED passes over rows a backup is
# touching right now (it is about to make them young anyway).
_SWEEP_SQL = """
SELECT digest, stored_size, pack_id FROM backup.chunks
WHERE vault_id = %(vault)s AND digest > %(after)s AND last_referenced_time < %(cutoff)s
ORDER BY digest LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
_LOCK_ROWS_SQL = """
SELECT digest FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)b) ORDER BY digest FOR UPDATE
"""
_ADVISORY = {(True, True): "pg_advisory_lock", (True, False): "pg_try_advisory_lock",
             (False, True): "pg_advisory_lock_shared", (False, False): "pg_try_advisory_lock_shared"}
_UNLOCK = {True: "pg_advisory_unlock", False: "pg_advisory_unlock_shared"}
SWEEP_BATCH = 1000


class ChunkIndexPort(Protocol):
    """What the data path needs from the chunk index."""

    def now(self) -> dt.datetime:
        """The index's clock (every timestamp in the index comes from it)."""

    def touch_existing(self, vault_id: str, ids: Sequence[bytes], since: dt.datetime) -> set[bytes]:
        """The subset of ids the vault's index holds; each returned row's last_referenced_time is >= since."""

    def record_new(self, vault_id: str, rows: Iterable[tuple]) -> None:
        """Adds (id, raw_size, stored_size[, pack_id, pack_offset]) rows for chunks that are durable in the
        store (or touches them). Without a pack the chunk is a lone object (the layout before packs)."""

    def locations(self, vault_id: str, ids: Iterable[bytes]) -> dict[bytes, tuple[bytes | None, int, int]]:
        """(pack_id or None, offset, stored_size) of each id the vault's index holds."""

    def has_chunks(self, vault_id: str) -> bool:
        """Whether the vault's index holds any row."""


def vault_lock_key(vault_id: str) -> int:
    """The vault's advisory lock key: a stable signed 64-bit hash (namespaced, since advisory lock keys are
    shared by everything that uses the database)."""
    digest = hashlib.blake2b(b"cbr.backup.vault:" + vault_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def chunk_store_key(vault_id: str, chunk: bytes) -> str:
    return f"{vault_id}/chunks/{chunk.hex()}"  # the data path's layout (disk_backup.chunk_key)


def _full_row(row: tuple) -> tuple:
    """(id, raw, stored, pack_id, offset): a row without a location is a lone chunk object."""
    return tuple(row) if len(row) == 5 else (*row, None, None)


def libpq_url(url: str) -> str:
    """Accepts SQLAlchemy's postgresql+psycopg:// form as well as a plain libpq URL."""
    for driver in ("+psycopg_async", "+psycopg"):
        url = url.replace(f"postgresql{driver}://", "postgresql://", 1)
    return url


class ChunkIndex:
    """backup.chunks through one synchronous psycopg connection (thread-safe: calls are serialised)."""

    def __init__(self, database_url: str, batch_size: int = BATCH_SIZE, connect_timeout: float = 10):
        import psycopg  # here, not at import time: the data path's CLI connects on a side thread

        self.batch_size = batch_size
        self._conn = psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=int(connect_timeout))
        self._lock = threading.Lock()
        self._deadlock = psycopg.errors.DeadlockDetected

    def close(self) -> None:
        self._conn.close()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._conn.execute("SELECT now()").fetchone()[0]

    def touch_existing(self, vault_id: str, ids: Sequence[bytes], since: dt.datetime) -> set[bytes]:
        found: set[bytes] = set()
        ids = sorted(set(ids))  # one lock order for every backup, so concurrent touches do not deadlock
        for start in range(0, len(ids), self.batch_size):
            params = {"vault": vault_id, "ids": ids[start:start + self.batch_size], "since": since}
            found.update(bytes(row[0]) for row in self._touch_and_find(params))
        return found

    def _touch_and_find(self, params: dict, attempts: int = 3) -> list:
        # Rows older than since are touched first; then every row still there is at least since, so GC
        # (whose cutoff is older) leaves it alone. A row GC deleted in between is simply not found.
        for attempt in range(attempts):
            try:
                with self._lock, self._conn.pipeline():
                    self._conn.execute(_TOUCH_SQL, params)
                    cursor = self._conn.execute(_FOUND_SQL, params)
                return cursor.fetchall()
            except self._deadlock:
                if attempt == attempts - 1:
                    raise

    def record_new(self, vault_id: str, rows: Iterable[tuple]) -> None:
        unique = sorted({row[0]: _full_row(row) for row in rows}.values())
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            self._execute(_RECORD_SQL, {"vault": vault_id, "ids": [r[0] for r in batch],
                                        "raw": [r[1] for r in batch], "stored": [r[2] for r in batch],
                                        "packs": [r[3] for r in batch], "offsets": [r[4] for r in batch]})

    def locations(self, vault_id: str, ids: Iterable[bytes]) -> dict[bytes, tuple[bytes | None, int, int]]:
        ids = sorted(set(ids))
        found: dict[bytes, tuple[bytes | None, int, int]] = {}
        for start in range(0, len(ids), self.batch_size):
            with self._lock:
                rows = self._conn.execute(_LOCATIONS_SQL, {"vault": vault_id,
                                                           "ids": ids[start:start + self.batch_size]}).fetchall()
            for digest, pack, offset, stored in rows:
                found[bytes(digest)] = (None if pack is None else bytes(pack), offset or 0, stored)
        return found

    # Packs (DESIGN.md 13.4)

    def pack_usage(self, vault_id: str) -> dict[bytes, tuple[int, int]]:
        """(live rows, live stored bytes) of every pack the vault's index names."""
        with self._lock:
            rows = self._conn.execute(_PACK_USAGE_SQL, {"vault": vault_id}).fetchall()
        return {bytes(pack): (count, total) for pack, count, total in rows}

    def lone_bytes(self, vault_id: str) -> int:
        """Stored bytes of the vault's chunks that are lone objects (rows from before packs)."""
        with self._lock:
            return int(self._conn.execute(_LONE_BYTES_SQL, (vault_id,)).fetchone()[0])

    def pack_rows(self, vault_id: str, pack_id: bytes) -> list[tuple[bytes, int, int, int]]:
        """(id, raw_size, offset, stored_size) of the rows naming the pack."""
        with self._lock:
            rows = self._conn.execute(_PACK_ROWS_SQL, {"vault": vault_id, "pack": pack_id}).fetchall()
        return [(bytes(digest), raw, offset, stored) for digest, raw, offset, stored in rows]

    def move_to_pack(self, vault_id: str, old_pack: bytes, new_pack: bytes, offsets: dict[bytes, int]) -> int:
        """Points the rows of these ids that still name old_pack at new_pack, in one transaction."""
        ids = sorted(offsets)
        with self._lock, self._conn.transaction():
            return self._conn.execute(_MOVE_SQL, {"vault": vault_id, "old": old_pack, "new": new_pack, "ids": ids,
                                                  "offsets": [offsets[i] for i in ids]}).rowcount

    def _execute(self, sql: str, params: dict, attempts: int = 3) -> int:
        for attempt in range(attempts):
            try:
                with self._lock:
                    return self._conn.execute(sql, params).rowcount
            except self._deadlock:
                if attempt == attempts - 1:
                    raise

    # The vault lock: backups hold it shared for their whole run, GC's orphan sweep exclusively

    def lock_vault(self, vault_id: str, exclusive: bool, wait: bool = True) -> bool:
        """Takes the vault's session advisory lock on this connection; False if wait is off and it is taken.

        Session locks stack: each successful call needs its own unlock_vault. Closing the connection (or the
        process dying) releases them all. wait=True blocks every other user of this ChunkIndex meanwhile."""
        sql = f"SELECT {_ADVISORY[(exclusive, wait)]}(%s)"
        with self._lock:
            got = self._conn.execute(sql, (vault_lock_key(vault_id),)).fetchone()[0]
        return True if wait else bool(got)

    def unlock_vault(self, vault_id: str, exclusive: bool) -> bool:
        """Releases one hold of the vault's lock; False if this connection did not hold it that way."""
        with self._lock:
            return bool(self._conn.execute(f"SELECT {_UNLOCK[exclusive]}(%s)",
                                           (vault_lock_key(vault_id),)).fetchone()[0])

    # Garbage collection and verification

    def mark(self, vault_id: str, ids: Iterable[bytes], since: dt.datetime | None = None) -> int:
        """Sets last_referenced_time = now() for these ids' rows (with since: only rows older than since, the
        others are young enough already). Returns the number of rows rewritten."""
        ids = sorted(set(ids))  # the backups' lock order
        sql = _MARK_ALL_SQL if since is None else _MARK_SQL
        return sum(self._execute(sql, {"vault": vault_id, "ids": ids[start:start + self.batch_size], "since": since})
                   for start in range(0, len(ids), self.batch_size))

    def used_bytes(self, vault_id: str) -> int:
        """Stored bytes of the vault's indexed chunks."""
        with self._lock:
            return int(self._conn.execute(_USED_SQL, (vault_id,)).fetchone()[0])

    def sizes(self, vault_id: str, ids: Iterable[bytes]) -> dict[bytes, int]:
        """raw_size of each id the vault's index holds (ids it does not hold are left out)."""
        ids = sorted(set(ids))
        found: dict[bytes, int] = {}
        for start in range(0, len(ids), self.batch_size):
            with self._lock:
                rows = self._conn.execute(_SIZES_SQL, {"vault": vault_id,
                                                       "ids": ids[start:start + self.batch_size]}).fetchall()
            found.update((bytes(digest), raw) for digest, raw in rows)
        return found

    def forget(self, vault_id: str, ids: Iterable[bytes],
               on_locked: Callable[[set[bytes]], Iterable[bytes]] | None = None) -> int:
        """Deletes the rows of ids; returns how many went.

        on_locked(present ids) runs inside the transaction while those rows are locked (a backup touching
        one of them waits) and returns the ids whose rows to delete: verify's quarantine re-checks and moves
        the stored values there, so that no backup can find a row whose value is being taken away."""
        ids = sorted(set(ids))
        if on_locked is None:
            return sum(self._execute(_DELETE_SQL, {"vault": vault_id, "ids": ids[start:start + self.batch_size]})
                       for start in range(0, len(ids), self.batch_size))
        return sum(self._forget_locked(vault_id, ids[start:start + self.batch_size], on_locked)
                   for start in range(0, len(ids), self.batch_size))

    def _forget_locked(self, vault_id: str, ids: list[bytes], on_locked, attempts: int = 3) -> int:
        for attempt in range(attempts):
            try:
                with self._lock, self._conn.transaction():
                    rows = self._conn.execute(_LOCK_ROWS_SQL, {"vault": vault_id, "ids": ids}).fetchall()
                    present = {bytes(row[0]) for row in rows}
                    # Past this point nothing waits on a lock, so a deadlock can only hit the SELECT above,
                    # before on_locked did anything: retrying is safe.
                    doomed = sorted(set(on_locked(present)) & present) if present else []
                    if not doomed:
                        return 0
                    return self._conn.execute(_DELETE_SQL, {"vault": vault_id, "ids": doomed}).rowcount
            except self._deadlock:
                if attempt == attempts - 1:
                    raise

    def sweep(self, vault_id: str, cutoff: dt.datetime, store, batch: int = SWEEP_BATCH,
              delete_workers: int = 8) -> tuple[int, int]:
        """Deletes the chunks whose last_referenced_time is before cutoff: (rows deleted, stored bytes freed).

        One transaction per batch: lock the rows (re-checking the time), delete their store keys while the
        locks are held, delete the rows, commit. A backup touching one of them meanwhile waits for the commit
        and then does not find it (so it stores the chunk again); one that touched it first made it young.
        If a store delete fails, the batch's rows are still deleted before the error is raised: a row must
        never outlive its value (a value without a row is only an orphan)."""
        deleted = freed = 0
        after = b""
        with ThreadPoolExecutor(max(1, delete_workers), thread_name_prefix="cbr-gc-delete") as pool:
            while True:
                with self._lock, self._conn.transaction():
                    rows = self._conn.execute(_SWEEP_SQL, {"vault": vault_id, "after": after, "cutoff": cutoff,
                                                           "limit": batch}).fetchall()
                    if not rows:
                        break
                    ids = [bytes(row[0]) for row in rows]
                    lone = [chunk_store_key(vault_id, bytes(row[0])) for row in rows if row[2] is None]
                    error = None
                    try:  # packed values stay in their pack: GC deletes or repacks whole packs afterwards
                        list(pool.map(store.delete, lone))
                    except Exception as exc:  # noqa: BLE001 - raised again after the rows are gone
                        error = exc
                    self._conn.execute(_DELETE_SQL, {"vault": vault_id, "ids": ids})
                if error is not None:
                    raise error
                deleted += len(rows)
                freed += sum(row[1] for row in rows)
                after = ids[-1]
                if len(rows) < batch:
                    break
        return deleted, freed

    def has_chunks(self, vault_id: str) -> bool:
        with self._lock:  # the primary key's prefix: one index probe, whatever the vault's size
            return self._conn.execute("SELECT EXISTS (SELECT 1 FROM backup.chunks WHERE vault_id = %s)",
                                      (vault_id,)).fetchone()[0]

    # For tests and GC tooling

    def count(self, vault_id: str) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM backup.chunks WHERE vault_id = %s",
                                      (vault_id,)).fetchone()[0]


class MemoryChunkIndex:
    """The same contract over a dict, for unit tests."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, bytes], list] = {}
        self.calls: list[tuple[str, int]] = []  # (method, batch length): lets tests check batching
        self._lock = threading.Lock()
        self._vault_locks: dict[str, tuple[int, bool]] = {}  # vault -> (shared holds, exclusive held)
        self._vault_changed = threading.Condition()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def touch_existing(self, vault_id: str, ids: Sequence[bytes], since: dt.datetime) -> set[bytes]:
        now = self.now()
        found = set()
        with self._lock:
            self.calls.append(("touch_existing", len(ids)))
            for chunk in ids:
                row = self.rows.get((vault_id, chunk))
                if row is not None:
                    if row[3] < since:
                        row[3] = now
                    found.add(chunk)
        return found

    def record_new(self, vault_id: str, rows: Iterable[tuple]) -> None:
        now = self.now()
        with self._lock:
            rows = [_full_row(row) for row in rows]
            self.calls.append(("record_new", len(rows)))
            for chunk, raw, stored, pack, offset in rows:
                row = self.rows.get((vault_id, chunk))
                if row is None:  # raw, stored, created, last referenced, pack, offset
                    self.rows[(vault_id, chunk)] = [raw, stored, now, now, pack, offset]
                else:
                    row[3] = now

    def locations(self, vault_id: str, ids: Iterable[bytes]) -> dict[bytes, tuple[bytes | None, int, int]]:
        with self._lock:
            return {chunk: (row[4], row[5] or 0, row[1]) for chunk in set(ids)
                    if (row := self.rows.get((vault_id, chunk))) is not None}

    def pack_usage(self, vault_id: str) -> dict[bytes, tuple[int, int]]:
        usage: dict[bytes, list[int]] = {}
        with self._lock:
            for (vault, _), row in self.rows.items():
                if vault == vault_id and row[4] is not None:
                    entry = usage.setdefault(row[4], [0, 0])
                    entry[0] += 1
                    entry[1] += row[1]
        return {pack: (count, total) for pack, (count, total) in usage.items()}

    def lone_bytes(self, vault_id: str) -> int:
        with self._lock:
            return sum(row[1] for (vault, _), row in self.rows.items() if vault == vault_id and row[4] is None)

    def pack_rows(self, vault_id: str, pack_id: bytes) -> list[tuple[bytes, int, int, int]]:
        with self._lock:
            return [(chunk, row[0], row[5], row[1]) for (vault, chunk), row in self.rows.items()
                    if vault == vault_id and row[4] == pack_id]

    def move_to_pack(self, vault_id: str, old_pack: bytes, new_pack: bytes, offsets: dict[bytes, int]) -> int:
        moved = 0
        with self._lock:
            for chunk, offset in offsets.items():
                row = self.rows.get((vault_id, chunk))
                if row is not None and row[4] == old_pack:
                    row[4], row[5] = new_pack, offset
                    moved += 1
        return moved

    def count(self, vault_id: str) -> int:
        return sum(1 for vault, _ in self.rows if vault == vault_id)

    def has_chunks(self, vault_id: str) -> bool:
        return any(vault == vault_id for vault, _ in list(self.rows))

    # The vault lock, within this process: shared holds are counted, exclusive is one flag

    def lock_vault(self, vault_id: str, exclusive: bool, wait: bool = True) -> bool:
        with self._vault_changed:
            while True:
                shared, held = self._vault_locks.get(vault_id, (0, False))
                if not held and not (exclusive and shared):
                    self._vault_locks[vault_id] = (shared, True) if exclusive else (shared + 1, False)
                    return True
                if not wait:
                    return False
                self._vault_changed.wait()

    def unlock_vault(self, vault_id: str, exclusive: bool) -> bool:
        with self._vault_changed:
            shared, held = self._vault_locks.get(vault_id, (0, False))
            if (held if exclusive else shared) == 0:
                return False
            self._vault_locks[vault_id] = (shared, False) if exclusive else (shared - 1, held)
            self._vault_changed.notify_all()
            return True

    # Garbage collection and verification: the same contract, the index lock standing in for row locks

    def mark(self, vault_id: str, ids: Iterable[bytes], since: dt.datetime | None = None) -> int:
        now, marked = self.now(), 0
        with self._lock:
            for chunk in set(ids):
                row = self.rows.get((vault_id, chunk))
                if row is not None and (since is None or row[3] < since):
                    row[3] = now
                    marked += 1
        return marked

    def used_bytes(self, vault_id: str) -> int:
        with self._lock:
            return sum(row[1] for (vault, _), row in self.rows.items() if vault == vault_id)

    def sizes(self, vault_id: str, ids: Iterable[bytes]) -> dict[bytes, int]:
        with self._lock:
            return {chunk: self.rows[(vault_id, chunk)][0] for chunk in set(ids) if (vault_id, chunk) in self.rows}

    def forget(self, vault_id: str, ids: Iterable[bytes],
               on_locked: Callable[[set[bytes]], Iterable[bytes]] | None = None) -> int:
        with self._lock:
            present = {chunk for chunk in set(ids) if (vault_id, chunk) in self.rows}
            doomed = present if on_locked is None or not present else set(on_locked(present)) & present
            for chunk in doomed:
                del self.rows[(vault_id, chunk)]
            return len(doomed)

    def sweep(self, vault_id: str, cutoff: dt.datetime, store, batch: int = SWEEP_BATCH,
              delete_workers: int = 1) -> tuple[int, int]:
        with self._lock:
            doomed = sorted(chunk for (vault, chunk), row in self.rows.items()
                            if vault == vault_id and row[3] < cutoff)
            freed = 0
            for chunk in doomed:
                row = self.rows.pop((vault_id, chunk))
                if row[4] is None:
                    store.delete(chunk_store_key(vault_id, chunk))
                freed += row[1]
            return len(doomed), freed
