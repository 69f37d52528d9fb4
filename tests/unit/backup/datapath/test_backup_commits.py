"""Disk backup after a crash (torn orphan chunks) and its durable batches (flush, then index rows)."""
import os
import threading
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import FsChunkStore, MemoryChunkStore
from cbr_backup.datapath import ChunkCodec, VaultKeys, backup_disk, chunk_id, restore_to_new_disk
from cbr_backup.datapath.dictionary import VaultDictionaries
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


def _restores(tmp_path, result, store, keys, vault_id, disk):
    restore_to_new_disk(result.manifest, store, keys, vault_id, tmp_path / "restored", workers=3)
    return sha256_file(tmp_path / "restored") == sha256_file(disk)


# 1. A torn orphan (a crash before flush() left an empty or partial chunk file) is replaced, not reused.

def _torn_values(block, keys):
    whole = ChunkCodec(keys).encode(block, chunk_id(block, keys.id_key))
    return {"empty": b"", "truncated": whole[:len(whole) // 2], "garbage": b"\x01" + os.urandom(300)}


@pytest.mark.parametrize("torn", ["empty", "truncated", "garbage"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_torn_orphan_in_memory_store_is_replaced(tmp_path, torn, encrypted):
    vault_id, keys = _vault(encrypted)
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0)
    chunk, block = _first_block(disk, keys)
    key = f"{vault_id}/chunks/{chunk.hex()}"
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    bad = _torn_values(block, keys)[torn]
    assert store.put(key, bad)  # the crash leftover: in the store, not in the index

    result = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert _restores(tmp_path, result, store, keys, vault_id, disk)
    assert store.get(key) != bad
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
    assert codec.decode(store.get(key), chunk, BS) == block
    assert result.new_chunks == len(result.manifest.unique_ids())  # the torn one was written again
    assert (vault_id, chunk) in index.rows


def test_empty_orphan_file_in_fs_store_is_replaced(tmp_path):
    """FsChunkStore's default sync="filesystem": the linked name survived the power loss, its data did not."""
    vault_id, keys = _vault()
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0)
    chunk, _ = _first_block(disk, keys)
    store, index = FsChunkStore(tmp_path / "store"), MemoryChunkIndex()
    path = store.path_for(f"{vault_id}/chunks/{chunk.hex()}")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")

    result = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert path.stat().st_size > 0
    assert _restores(tmp_path, result, store, keys, vault_id, disk)


def test_sound_orphan_is_reused_as_it_is(tmp_path):
    vault_id, keys = _vault(encrypted=True)  # random nonces: a rewritten value would differ
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0)
    chunk, block = _first_block(disk, keys)
    key = f"{vault_id}/chunks/{chunk.hex()}"
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    good = ChunkCodec(keys).encode(block, chunk)
    store.put(key, good)

    result = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    assert store.get(key) == good
    assert result.new_chunks == len(result.manifest.unique_ids()) - 1
    assert (vault_id, chunk) in index.rows  # indexed now: no longer an orphan
    assert _restores(tmp_path, result, store, keys, vault_id, disk)


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
        return getattr(self.index if name in ("now", "touch_existing") else self.store, name)

    # the index
    def record_new(self, vault_id, rows):
        rows = list(rows)
        self._log("record", [row[0].hex() for row in rows])
        self.index.record_new(vault_id, rows)


def test_new_chunks_are_committed_in_batches(tmp_path):
    vault_id, keys = _vault()
    disk = make_disk(tmp_path / "disk", 6 * MIB + 4321, holes=0.2)
    reference = backup_disk(disk, keys, MemoryChunkStore(), MemoryChunkIndex(), vault_id, **SMALL)
    batch = 7
    assert len(reference.manifest.unique_ids()) > 4 * batch

    index = MemoryChunkIndex()
    recorder = _Recorder(MemoryChunkStore(), index)
    result = backup_disk(disk, keys, recorder, recorder, vault_id, commit_every=batch, **SMALL)
    assert result.manifest == reference.manifest
    assert result.new_chunks == reference.new_chunks
    assert _restores(tmp_path, result, recorder.store, keys, vault_id, disk)

    records = [e[1] for e in recorder.events if e[0] == "record"]
    assert len(records) > 4 and all(len(rows) <= batch for rows in records)
    assert sum(e[0] == "flush_start" for e in recorder.events) >= len(records)
    assert index.count(vault_id) == len(result.manifest.unique_ids())
    # Write order: each row is inserted only after a flush that started after its chunk's put returned.
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
