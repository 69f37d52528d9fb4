"""The chunk index (backup.chunks): which chunks a vault's store holds, looked up and upserted in batches.

The data path runs on threads, so this adapter is synchronous: one psycopg 3 connection in autocommit mode
(each batch is one statement, hence its own transaction), shared by the pipeline's threads under a lock.
A backup makes O(disk size / buffer size) lookups and O(new chunks / batch) inserts, never one per chunk;
running them through the service's async engine would only add an event loop hop to every batch.

Why "touch" is part of the lookup: GC deletes a chunk only if nobody referenced it since
min(GC start, oldest running backup start) - grace (DESIGN.md, "Garbage collection"). A backup that reuses a
chunk must therefore move its last_referenced_time past that cutoff before relying on it. Rows touched
recently enough (at or after `since`, which the caller sets to its start minus a margin smaller than GC's
grace) are not rewritten, so an incremental backup soon after the previous one writes almost nothing.
"""
from __future__ import annotations

import datetime as dt
import threading
from typing import Iterable, Protocol, Sequence

BATCH_SIZE = 4096
TOUCH_MARGIN = dt.timedelta(hours=1)  # must stay below GC's grace period (DESIGN.md)

# Two statements, no join: a join's plan depends on row estimates, and right after a new vault's first
# backup the statistics say the vault has no rows (a nested loop over it cost 4 s per batch). Both
# statements scan by the primary key (or, with stale statistics, the vault's rows with a hashed filter).
# Sent in one pipeline, so a batch is still one round trip.
_TOUCH_SQL = """
UPDATE backup.chunks SET last_referenced_time = now()
WHERE vault_id = %(vault)s AND digest = ANY(%(ids)s) AND last_referenced_time < %(since)s
"""
_FOUND_SQL = "SELECT digest FROM backup.chunks WHERE vault_id = %(vault)s AND digest = ANY(%(ids)s)"

_RECORD_SQL = """
INSERT INTO backup.chunks (vault_id, digest, raw_size, stored_size, created_time, last_referenced_time)
SELECT %(vault)s, t.digest, t.raw_size, t.stored_size, now(), now()
FROM unnest(%(ids)s::bytea[], %(raw)s::int[], %(stored)s::int[]) AS t(digest, raw_size, stored_size)
ON CONFLICT (vault_id, digest) DO UPDATE SET last_referenced_time = now()
"""


class ChunkIndexPort(Protocol):
    """What the data path needs from the chunk index."""

    def now(self) -> dt.datetime:
        """The index's clock (every timestamp in the index comes from it)."""

    def touch_existing(self, vault_id: str, ids: Sequence[bytes], since: dt.datetime) -> set[bytes]:
        """The subset of ids the vault's index holds; each returned row's last_referenced_time is >= since."""

    def record_new(self, vault_id: str, rows: Iterable[tuple[bytes, int, int]]) -> None:
        """Adds (id, raw_size, stored_size) rows for chunks that are durable in the store (or touches them)."""


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

    def record_new(self, vault_id: str, rows: Iterable[tuple[bytes, int, int]]) -> None:
        unique = sorted({row[0]: row for row in rows}.values())
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            self._execute(_RECORD_SQL, {"vault": vault_id, "ids": [r[0] for r in batch],
                                        "raw": [r[1] for r in batch], "stored": [r[2] for r in batch]})

    def _execute(self, sql: str, params: dict, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                with self._lock:
                    self._conn.execute(sql, params)
                return
            except self._deadlock:
                if attempt == attempts - 1:
                    raise

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

    def record_new(self, vault_id: str, rows: Iterable[tuple[bytes, int, int]]) -> None:
        now = self.now()
        with self._lock:
            rows = list(rows)
            self.calls.append(("record_new", len(rows)))
            for chunk, raw, stored in rows:
                row = self.rows.get((vault_id, chunk))
                if row is None:
                    self.rows[(vault_id, chunk)] = [raw, stored, now, now]
                else:
                    row[3] = now

    def count(self, vault_id: str) -> int:
        return sum(1 for vault, _ in self.rows if vault == vault_id)
