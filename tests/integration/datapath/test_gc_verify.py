"""Garbage collection and verification against a real Postgres chunk index and a file-system chunk store."""
import datetime as dt
import os
import threading
import time
import uuid

import psycopg
import pytest

from cbr_backup.adapters.chunk_index import ChunkIndex, libpq_url
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, chunk_id, restore_to_new_disk
from cbr_backup.datapath.disk_backup import chunk_key, manifest_key
from cbr_backup.datapath.errors import ChunkMissingError
from cbr_backup.datapath.gc import collect_garbage
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.verify import quarantine_key, verify_chunks
from cbr_common.errors import DataLossError
from tests.support.packs import corrupt_chunk, packed_chunks, stored_value
from tests.unit.backup.datapath.disk_images import MIB, make_disk, rewrite_blocks, sha256_file

BS = 64 << 10
SMALL = dict(block_size=BS, buffer_size=256 << 10, workers=2)
NO_GRACE = dt.timedelta(0)


@pytest.fixture(scope="module", autouse=True)
def reader(infra):
    """An index connection of the test's own, for finding where chunks live (DESIGN.md 13.3)."""
    global READER
    READER = ChunkIndex(infra.postgres.url)
    yield READER
    READER.close()


@pytest.fixture(scope="module")
def index(infra):
    index = ChunkIndex(infra.postgres.url, batch_size=50)  # small batches: several per call
    yield index
    index.close()


@pytest.fixture
def connect(infra):
    """Opens more connections to the index (a backup's own, GC's), closed at the end of the test."""
    opened = []

    def connect():
        opened.append(ChunkIndex(infra.postgres.url, batch_size=50))
        return opened[-1]
    yield connect
    for index in opened:
        index.close()


@pytest.fixture
def sql(infra):
    with psycopg.connect(libpq_url(infra.postgres.url), autocommit=True) as conn:
        def sql(statement, params=()):
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else cursor.rowcount
        yield sql


def _age(sql, vault_id, hours):
    """Makes every row of the vault look last referenced hours ago (its backups are that old)."""
    sql("UPDATE backup.chunks SET last_referenced_time = now() - %s WHERE vault_id = %s",
        (dt.timedelta(hours=hours), vault_id))


def _stored_sizes(sql, vault_id, ids):
    rows = sql("SELECT digest, stored_size FROM backup.chunks WHERE vault_id = %s AND digest = ANY(%s)",
               (vault_id, list(ids)))
    return {bytes(digest): size for digest, size in rows}


def _in_store(store, vault_id, ids):
    """The ids whose value the store gives through the index (a pack's chunk, or a lone chunk object)."""
    return set(ChunkSource(store, None, vault_id, READER).fetch_many(ids))


def _vault(tmp_path):
    return str(uuid.uuid4()), VaultKeys(os.urandom(32)), FsChunkStore(tmp_path / "store")


def _restores(tmp_path, result, store, keys, vault_id, disk_hash, name="restored"):
    restore_to_new_disk(result.manifest, store, keys, vault_id, tmp_path / name, workers=2, index=READER)
    return sha256_file(tmp_path / name) == disk_hash


def _gc(index, store, vault_id, live_results, **kwargs):
    kwargs.setdefault("oldest_running_start", None)
    kwargs.setdefault("grace", NO_GRACE)
    return collect_garbage(
        index, store, vault_id, lambda: (chunk for r in live_results for chunk in r.manifest.unique_ids()),
        live_manifest_ids=lambda: {r.manifest_id for r in live_results}, **kwargs)


# The vault lock and the sweep

def test_vault_lock_shared_exclusive_and_closed_connections(connect):
    vault_id, other_vault = str(uuid.uuid4()), str(uuid.uuid4())
    backup1, backup2, gc = connect(), connect(), connect()
    assert backup1.lock_vault(vault_id, exclusive=False)
    assert backup2.lock_vault(vault_id, exclusive=False, wait=False)        # shared + shared
    assert not gc.lock_vault(vault_id, exclusive=True, wait=False)          # shared held elsewhere
    assert gc.lock_vault(other_vault, exclusive=True, wait=False)           # another vault's lock
    assert backup1.unlock_vault(vault_id, exclusive=False)
    assert not gc.lock_vault(vault_id, exclusive=True, wait=False)          # backup2 still holds it
    backup2.close()  # a killed backup loses its lock (once the server notices: the backend exits async)
    deadline = time.monotonic() + 10
    while not gc.lock_vault(vault_id, exclusive=True, wait=False):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not backup1.lock_vault(vault_id, exclusive=False, wait=False)    # exclusive keeps backups out
    assert not backup1.unlock_vault(vault_id, exclusive=False)              # not held
    assert gc.unlock_vault(vault_id, exclusive=True)
    assert backup1.lock_vault(vault_id, exclusive=False, wait=False)

    waited = threading.Event()
    assert backup1.unlock_vault(vault_id, exclusive=False)
    assert gc.lock_vault(vault_id, exclusive=True)

    def wait_shared():
        backup1.lock_vault(vault_id, exclusive=False)  # blocks until GC releases
        waited.set()
    waiter = threading.Thread(target=wait_shared)
    waiter.start()
    assert not waited.wait(0.3)
    gc.unlock_vault(vault_id, exclusive=True)
    assert waited.wait(10)
    waiter.join()


def test_sweep_batches_skips_young_and_locked_rows(tmp_path, infra, index, sql):
    vault_id, _, store = _vault(tmp_path)
    ids = sorted(os.urandom(32) for _ in range(40))
    for chunk in ids:
        store.put(chunk_key(vault_id, chunk), b"x" * 10)
    index.record_new(vault_id, [(chunk, BS, 10 + n) for n, chunk in enumerate(ids)])
    old, young = ids[:30], ids[30:]
    sql("UPDATE backup.chunks SET last_referenced_time = now() - interval '2 hours' "
        "WHERE vault_id = %s AND digest = ANY(%s)", (vault_id, old))
    cutoff = index.now() - dt.timedelta(hours=1)
    sizes = _stored_sizes(sql, vault_id, old)
    with psycopg.connect(libpq_url(infra.postgres.url)) as backup:  # a backup touching old[5] right now
        backup.execute("SELECT 1 FROM backup.chunks WHERE vault_id = %s AND digest = %s FOR UPDATE",
                       (vault_id, old[5]))
        deleted, freed = index.sweep(vault_id, cutoff, store, batch=7)
        backup.rollback()
    assert deleted == 29 and freed == sum(sizes.values()) - sizes[old[5]]
    assert set(index.sizes(vault_id, ids)) == set(young) | {old[5]}
    assert _in_store(store, vault_id, ids) == set(young) | {old[5]}
    assert index.sweep(vault_id, cutoff, store, batch=7) == (1, sizes[old[5]])


# Garbage collection with no backup running

def test_gc_sweeps_what_only_deleted_backups_used_and_orphans(tmp_path, index, sql):
    vault_id, keys, store = _vault(tmp_path)
    disk = make_disk(tmp_path / "disk", 4 * MIB)
    a = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    rewrite_blocks(disk, BS, 12)
    b = backup_disk(disk, keys, store, index, vault_id, parent=a.manifest, **SMALL)
    b_hash = sha256_file(disk)
    a_only = a.manifest.unique_ids() - b.manifest.unique_ids()
    assert a_only and len(a_only) < len(b.manifest.unique_ids()) // 2  # most chunks are shared
    a_only_sizes = _stored_sizes(sql, vault_id, a_only)
    orphan = os.urandom(32)
    store.put(chunk_key(vault_id, orphan), b"left by a backup that died before indexing it")
    store.put(manifest_key(vault_id, "never-completed"), b"\x00junk")
    dicts = set(store.iterate(f"{vault_id}/dicts/"))
    used = index.used_bytes(vault_id)

    result = _gc(index, store, vault_id, [b])  # a is no longer live

    assert result.exclusive and result.deleted_chunks == len(a_only)
    assert result.freed_bytes == sum(a_only_sizes.values()) == used - index.used_bytes(vault_id)
    assert result.marked == len(b.manifest.unique_ids())
    assert result.orphans_deleted == 1 and result.manifests_deleted == 2  # a's and the never completed one
    assert not _in_store(store, vault_id, a_only | {orphan}) and not index.sizes(vault_id, a_only)
    assert _in_store(store, vault_id, b.manifest.unique_ids()) == b.manifest.unique_ids()
    assert index.count(vault_id) == len(b.manifest.unique_ids())
    assert set(store.iterate(f"{vault_id}/manifests/")) == {manifest_key(vault_id, b.manifest_id)}
    assert dicts and set(store.iterate(f"{vault_id}/dicts/")) == dicts  # never collected
    assert _restores(tmp_path, b, store, keys, vault_id, b_hash)

    again = _gc(index, store, vault_id, [b], grace=dt.timedelta(hours=1))
    assert (again.deleted_chunks, again.orphans_deleted, again.manifests_deleted) == (0, 0, 0)
    assert again.marked == 0  # every live row is past this cutoff already: the mark rewrites nothing


def test_grace_keeps_recently_unreferenced_chunks(tmp_path, index):
    vault_id, keys, store = _vault(tmp_path)
    a = backup_disk(make_disk(tmp_path / "disk", 2 * MIB), keys, store, index, vault_id, **SMALL)
    result = _gc(index, store, vault_id, [], grace=dt.timedelta(hours=1))
    assert result.exclusive and result.deleted_chunks == 0 and result.manifests_deleted == 1
    assert index.count(vault_id) == len(a.manifest.unique_ids())


# THE RACE: GC beside a backup that is half-way

class HeldIndex:
    """A backup's index that stops the backup half-way: after its first insert of new rows, every later index
    call waits for `release`. Records which ids the backup relies on (found by a lookup, or inserted)."""

    def __init__(self, inner: ChunkIndex):
        self.inner = inner
        self.held = threading.Event()
        self.release = threading.Event()
        self.relied: set[bytes] = set()
        self._lock = threading.Lock()

    def now(self):
        return self.inner.now()

    def has_chunks(self, vault_id):
        return self.inner.has_chunks(vault_id)

    def _gate(self):
        if self.held.is_set():
            assert self.release.wait(60)

    def touch_existing(self, vault_id, ids, since):
        self._gate()
        found = self.inner.touch_existing(vault_id, ids, since)
        with self._lock:
            self.relied |= found
        return found

    def record_new(self, vault_id, rows):
        self._gate()
        rows = list(rows)
        self.inner.record_new(vault_id, rows)
        with self._lock:
            self.relied |= {row[0] for row in rows}
        if rows:
            self.held.set()
            assert self.release.wait(60)


def _disk_ids(disk, keys):
    with open(disk, "rb") as f:
        blocks = iter(lambda: f.read(BS), b"")
        return {chunk_id(block, keys.id_key) for block in blocks if block.strip(b"\0")}


def _held_backup(tmp_path, connect, sql, vault_id, keys, store, lock: bool):
    """Backup x of a disk, since deleted (not live). Backup y of the changed disk started 2 h ago (its touch
    margin reaches back to 3 h ago) and is held half-way on its own connection, holding the vault's lock shared
    if lock. x's rows that y will not need are 4 h old; the others 2.5 h: y relies on those without
    rewriting them (they are younger than its start - margin), so only the oldest-running-start term of the
    cutoff protects them."""
    disk = make_disk(tmp_path / "disk", 4 * MIB, seed=5)
    x = backup_disk(disk, keys, store, connect(), vault_id, **SMALL)
    rewrite_blocks(disk, BS, 10, seed=11)
    x_only = x.manifest.unique_ids() - _disk_ids(disk, keys)
    assert x_only
    _age(sql, vault_id, hours=2.5)
    sql("UPDATE backup.chunks SET last_referenced_time = now() - interval '4 hours' "
        "WHERE vault_id = %s AND digest = ANY(%s)", (vault_id, list(x_only)))
    y_index = connect()
    if lock:
        assert y_index.lock_vault(vault_id, exclusive=False)
    held = HeldIndex(y_index)
    y_start = y_index.now() - dt.timedelta(hours=2)
    outcome = {}

    def run():
        try:
            outcome["result"] = backup_disk(disk, keys, store, held, vault_id, started_time=y_start,
                                            commit_every=2, **SMALL)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc
        finally:
            held.held.set()
    thread = threading.Thread(target=run)
    thread.start()
    assert held.held.wait(60) and "error" not in outcome
    return disk, x, x_only, held, y_start, thread, outcome


def test_gc_beside_a_running_backup_keeps_what_it_relies_on(tmp_path, connect, sql):
    vault_id, keys, store = _vault(tmp_path)
    disk, x, x_only, held, y_start, thread, outcome = _held_backup(tmp_path, connect, sql, vault_id, keys,
                                                                  store, lock=True)
    gc_index = connect()
    try:
        result = _gc(gc_index, store, vault_id, [], oldest_running_start=y_start)  # x deleted, y running
        relied = set(held.relied)
    finally:
        held.release.set()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    y = outcome["result"]

    assert not result.exclusive and result.cutoff == y_start - dt.timedelta(hours=1)
    assert relied & x.manifest.unique_ids()  # y had reused some of x's chunks, and GC left them alone
    assert _in_store(store, vault_id, relied) == relied and set(gc_index.sizes(vault_id, relied)) == relied
    assert not _in_store(store, vault_id, x_only) and result.deleted_chunks == len(x_only)
    assert (result.orphans_deleted, result.manifests_deleted) == (0, 0)  # not without the exclusive lock
    assert _restores(tmp_path, y, store, keys, vault_id, sha256_file(disk))

    # Once y is done (and live), GC gets the lock and cleans up the rest.
    held.inner.unlock_vault(vault_id, exclusive=False)
    after = _gc(gc_index, store, vault_id, [y])
    assert after.exclusive and after.manifests_deleted == 1 and after.orphans_deleted == 0
    assert gc_index.count(vault_id) == len(y.manifest.unique_ids())
    assert _restores(tmp_path, y, store, keys, vault_id, sha256_file(disk), name="again")


def test_without_the_shared_lock_the_same_gc_breaks_the_backup(tmp_path, connect, sql):
    """The control: the same race where the backup does not hold the vault's lock. GC takes it exclusively,
    believes no backup runs, and deletes what the backup relies on: the lock is what protects it."""
    vault_id, keys, store = _vault(tmp_path)
    disk, x, x_only, held, y_start, thread, outcome = _held_backup(tmp_path, connect, sql, vault_id, keys,
                                                                  store, lock=False)
    try:
        result = _gc(connect(), store, vault_id, [], oldest_running_start=y_start)
        relied = set(held.relied)
    finally:
        held.release.set()
    thread.join(60)
    y = outcome["result"]
    assert result.exclusive
    assert relied - _in_store(store, vault_id, relied)  # chunks the backup relied on are gone
    with pytest.raises(DataLossError):
        restore_to_new_disk(y.manifest, store, keys, vault_id, tmp_path / "restored", workers=2,
                            index=READER)


def test_without_the_oldest_running_start_the_same_gc_breaks_the_backup(tmp_path, connect, sql):
    """The other control: GC that is told no backup runs (but cannot take the lock) uses gc_start - margin and
    deletes the rows y relies on without having rewritten them."""
    vault_id, keys, store = _vault(tmp_path)
    disk, x, x_only, held, y_start, thread, outcome = _held_backup(tmp_path, connect, sql, vault_id, keys,
                                                                  store, lock=True)
    try:
        result = _gc(connect(), store, vault_id, [], oldest_running_start=None)
        relied = set(held.relied)
    finally:
        held.release.set()
    thread.join(60)
    assert not result.exclusive
    assert relied - _in_store(store, vault_id, relied)
    with pytest.raises(DataLossError):
        restore_to_new_disk(outcome["result"].manifest, store, keys, vault_id, tmp_path / "restored", workers=2,
                            index=READER)


# Verify

def test_verify_finds_quarantines_and_the_next_backup_repairs(tmp_path, index, sql):
    vault_id, keys, store = _vault(tmp_path)
    disk = make_disk(tmp_path / "disk", 4 * MIB, seed=3)
    disk_hash = sha256_file(disk)
    a = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    ids = sorted(a.manifest.unique_ids())
    packed = packed_chunks(store, keys, vault_id)
    bare = [chunk for chunk in ids if packed[chunk][1].length == BS]  # random: stored as is
    flipped, deleted = bare[0], next(chunk for chunk in ids if chunk != bare[0])
    corrupt_chunk(store, keys, vault_id, flipped)
    value = stored_value(store, keys, vault_id, flipped)
    sql("UPDATE backup.chunks SET pack_id = %s WHERE vault_id = %s AND digest = %s",
        (os.urandom(16), vault_id, deleted))  # its row names a pack that is gone
    progress = []

    result = verify_chunks(index, store, keys, vault_id, ids + ids[:5], progress=lambda *a: progress.append(a),
                           batch=16)

    assert result.checked_chunks == len(ids) and set(result.bad_chunks) == {flipped, deleted}
    assert result.bad_chunks[flipped].startswith("corrupt: ") and result.bad_chunks[deleted] == "missing"
    assert result.quarantined == 2 and not index.sizes(vault_id, [flipped, deleted])
    assert store.get(quarantine_key(vault_id, flipped)) == bytes(value)
    assert not _in_store(store, vault_id, [flipped, deleted])
    assert progress[-1] == (len(ids), len(ids)) and len(progress) == -(-len(ids) // 16)

    with pytest.raises(ChunkMissingError):
        restore_to_new_disk(a.manifest, store, keys, vault_id, tmp_path / "broken", workers=2, index=READER)
    with open(tmp_path / "broken", "rb") as target:  # nothing wrong was written where the bad chunks go
        for i, chunk in a.manifest.data_blocks():
            if chunk in (flipped, deleted):
                target.seek(i * BS)
                assert target.read(BS).strip(b"\0") == b""

    repair = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert repair.new_chunks == 2 and set(index.sizes(vault_id, [flipped, deleted])) == {flipped, deleted}
    assert _restores(tmp_path, repair, store, keys, vault_id, disk_hash)
    assert _restores(tmp_path, a, store, keys, vault_id, disk_hash, name="old")  # same ids: a is whole again
    clean = verify_chunks(index, store, keys, vault_id, ids)
    assert clean.bad_chunks == {} and clean.quarantined == 0
