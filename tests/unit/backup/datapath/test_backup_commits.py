"""Disk backup after a crash (packs not yet durable) and its durable batches (flush, then index rows)."""
import os
import threading
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import FsChunkStore, MemoryChunkStore
from cbr_backup.datapath import ChunkCodec, VaultKeys, backup_disk, chunk_id, restore_to_new_disk
from cbr_backup.datapath.packs import PackWriter
from tests.unit.backup.datapath.disk_images import MIB, make_disk, sha256_file

BS = 64 << 10
SMALL = dict(block_size=BS, buffer_size=256 << 10, workers=3)


def _vault(encrypted=False):
    return str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)


def _first_block(disk, keys):
    """(key suffix, plaintext) of the disk's first block (make_disk(..., holes=0.0): never a hole)."""
    with open(disk, "rb") as f:
        block = f.read(BS)
    assert block.strip(b"\0")
    return chunk_id(block, keys.id_key), block


def _restores(tmp_path, result, store, keys, vault_id, disk, index=None):
    restore_to_new_disk(result.manifest, store, keys, vault_id, tmp_path / "restored", workers=3, index=index)
    return sha256_file(tmp_path / "restored") == sha256_file(disk)


# 1. Packs: a crash before a pack is durable leaves no index row pointing into it; dedup within the open pack.

class _CrashingStore:
    """Puts the first `packs` packs, then fails like a process killed before its next pack was written."""

    def __init__(self, store, packs):
        self.store, self.left = store, packs

    def put(self, key, data):
        if "/packs/" in key:
            if self.left == 0:
                raise OSError("killed")
            self.left -= 1
        return self.store.put(key, data)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_crash_before_a_pack_is_durable_leaves_no_row_into_it(tmp_path, encrypted):
    vault_id, keys = _vault(encrypted)
    disk = make_disk(tmp_path / "disk", 6 * MIB, holes=0.1)
    store, index = FsChunkStore(tmp_path / "store"), MemoryChunkIndex()
    with pytest.raises(OSError, match="killed"):
        backup_disk(disk, keys, _CrashingStore(store, packs=3), index, vault_id, commit_every=1,
                    pack_target=256 << 10, **SMALL)
    packs = {bytes.fromhex(k.rsplit("/", 1)[1]) for k in store.iterate(f"{vault_id}/packs/")}
    assert len(packs) == 3
    assert {row[4] for row in index.rows.values()} <= packs  # every row names a pack that was put

    result = backup_disk(disk, keys, store, index, vault_id, pack_target=256 << 10, **SMALL)
    assert result.new_chunks == len(result.manifest.unique_ids()) - index_rows_before(index, packs)
    assert _restores(tmp_path, result, store, keys, vault_id, disk)
    assert _restores(tmp_path, result, store, keys, vault_id, disk, index=index)


def index_rows_before(index, packs):
    return sum(1 for row in index.rows.values() if row[4] in packs)


def test_a_chunk_already_in_the_open_pack_is_not_appended_twice():
    vault_id, keys = _vault()
    store = MemoryChunkStore()
    codec = ChunkCodec(keys)
    writer = PackWriter(store, codec, vault_id, target_size=1 << 20)
    block = os.urandom(BS)
    chunk = chunk_id(block, keys.id_key)
    value = codec.encode(block, chunk)
    assert writer.add(chunk, BS, value) and not writer.add(chunk, BS, value)
    assert writer.take_rows() == []  # nothing is put before the pack closes: no row yet
    writer.close()
    rows = writer.take_rows()
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [(chunk, BS, len(value), 0)]
    assert writer.packs_written == 1 and len(list(store.iterate(f"{vault_id}/packs/"))) == 1


def test_a_lone_leftover_chunk_is_ignored(tmp_path):
    """A torn lone chunk file (the layout before packs) that no row names changes nothing."""
    vault_id, keys = _vault()
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0)
    chunk, _ = _first_block(disk, keys)
    store, index = FsChunkStore(tmp_path / "store"), MemoryChunkIndex()
    path = store.path_for(f"{vault_id}/chunks/{chunk.hex()}")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")

    result = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert result.new_chunks == len(result.manifest.unique_ids())
    assert index.rows[(vault_id, chunk)][4] is not None  # in a pack
    assert _restores(tmp_path, result, store, keys, vault_id, disk, index=index)


# 2. New chunks are made durable and indexed in batches, so memory does not grow with the disk.

class _Recorder:
    """Wraps a store and an index, logging puts, flushes and index inserts in the order they happen."""

    def __init__(self, store, index):
        self.store, self.index = store, index
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def _log(self, *event):
        with self.lock:
            self.events.append(event)

    # the store
    def put(self, key, data):
        created = self.store.put(key, data)
        self._log("put", key.rsplit("/", 1)[1])
        return created

    def flush(self):
        self._log("flush_start")
        self.store.flush()

    def __getattr__(self, name):  # get, delete, exists_many, iterate; the index's now and touch_existing
        return getattr(self.index if name in ("now", "touch_existing", "has_chunks") else self.store, name)

    # the index
    def record_new(self, vault_id, rows):
        rows = list(rows)
        self._log("record", [row[3].hex() for row in rows])  # the packs the rows point into
        self.index.record_new(vault_id, rows)


def test_new_chunks_are_committed_in_batches(tmp_path):
    vault_id, keys = _vault()
    disk = make_disk(tmp_path / "disk", 6 * MIB + 4321, holes=0.2)
    reference = backup_disk(disk, keys, MemoryChunkStore(), MemoryChunkIndex(), vault_id, **SMALL)
    batch = 7
    assert len(reference.manifest.unique_ids()) > 4 * batch

    index = MemoryChunkIndex()
    recorder = _Recorder(MemoryChunkStore(), index)
    # One chunk per pack, so rows come a pack at a time and batches stay near commit_every.
    result = backup_disk(disk, keys, recorder, recorder, vault_id, commit_every=batch, pack_target=1, **SMALL)
    assert result.manifest == reference.manifest
    assert result.new_chunks == reference.new_chunks
    assert _restores(tmp_path, result, recorder.store, keys, vault_id, disk)

    records = [e[1] for e in recorder.events if e[0] == "record"]
    # A batch is taken once it holds batch rows; each worker may have put a piece's chunks (4 blocks) meanwhile.
    per_piece = SMALL["buffer_size"] // BS
    assert len(records) > 4 and all(len(rows) < batch + per_piece * SMALL["workers"] for rows in records)
    assert sum(e[0] == "flush_start" for e in recorder.events) >= len(records)
    assert index.count(vault_id) == len(result.manifest.unique_ids())
    # Write order: each row is inserted only after a flush that started after its pack's put returned.
    put_done, durable = set(), set()
    for event in recorder.events:
        if event[0] == "put":
            put_done.add(event[1])
        elif event[0] == "flush_start":
            durable |= put_done
        elif event[0] == "record":
            assert set(event[1]) <= durable

    # A second full backup of the same disk: all reuse, with the lookup cache cleared as it fills.
    again = backup_disk(disk, keys, recorder, recorder, vault_id, commit_every=batch, **SMALL)
    assert again.new_chunks == 0 and again.reused_chunks == len(again.manifest.unique_ids())
    assert again.manifest == result.manifest


def test_commit_every_must_be_positive(tmp_path):
    vault_id, keys = _vault()
    disk = make_disk(tmp_path / "disk", MIB)
    with pytest.raises(ValueError):
        backup_disk(disk, keys, MemoryChunkStore(), MemoryChunkIndex(), vault_id, commit_every=0, **SMALL)


def test_a_restore_reads_nearby_chunks_of_a_pack_in_one_ranged_read(tmp_path):
    vault_id, keys = _vault(encrypted=True)
    disk = make_disk(tmp_path / "disk", 8 * MIB, holes=0.2)
    store, index = FsChunkStore(tmp_path / "store"), MemoryChunkIndex()
    result = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert len(list(store.iterate(f"{vault_id}/packs/"))) == 1
    restored = restore_to_new_disk(result.manifest, store, keys, vault_id, tmp_path / "restored", index=index)
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)
    assert restored.fetched_chunks == len(result.manifest.unique_ids()) > 50
    assert restored.store_reads <= 2  # one 8 MiB restore piece, its chunks stored back to back by the backup
    assert restored.needed_bytes <= restored.store_read_bytes <= 1.1 * restored.needed_bytes



def test_the_device_chooses_the_backup_pipelines_thread_count(tmp_path, monkeypatch):
    """A device's backup_workers (RBD keeps three, for the worker's memory) is the pipeline's thread count; a
    file disk gets two more than default_workers()."""
    from cbr_backup.datapath import disk_backup
    from cbr_backup.datapath.blockio import open_disk
    from cbr_backup.datapath.pipeline import default_workers
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0)
    vault_id, keys = _vault()
    asked = []
    real = disk_backup.run_pipeline
    monkeypatch.setattr(disk_backup, "run_pipeline", lambda *a, **kw: asked.append(kw["workers"]) or real(*a, **kw))
    for wanted in (1, None):
        device = open_disk(disk, os.O_RDONLY)
        device.backup_workers = wanted
        try:
            result = backup_disk(device, keys, MemoryChunkStore(), MemoryChunkIndex(), vault_id, block_size=BS,
                                 buffer_size=256 << 10)
        finally:
            device.close()
        assert result.new_chunks == 4 * MIB // BS
    assert asked == [1, default_workers() + 2]
