"""Disk backup and restore end to end on a memory store and index: byte equality for every path."""
import os
import threading
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import (ChunkCorruptError, ChunkMissingError, VaultKeys, backup_disk, load_manifest,
                                 restore_in_place, restore_to_new_disk, take_snapshot)
from cbr_backup.datapath.pipeline import run_pipeline, plan_pieces
from tests.support.packs import corrupt_chunk, drop_chunk, stored_value
from tests.unit.backup.datapath.disk_images import (MIB, allocated_bytes, make_disk, rewrite_blocks,
                                                    sha256_file)

BS = 64 << 10
SMALL = dict(buffer_size=256 << 10, workers=3)  # several pieces per disk even at a few MiB


class Vault:
    def __init__(self, encrypted=False):
        self.id = str(uuid.uuid4())
        self.keys = VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)
        self.store = MemoryChunkStore()
        self.index = MemoryChunkIndex()

    def backup(self, path, **kw):
        return backup_disk(path, self.keys, self.store, self.index, self.id, **{"block_size": BS, **SMALL, **kw})

    def restore(self, manifest, target, in_place=False):
        restore = restore_in_place if in_place else restore_to_new_disk
        return restore(manifest, self.store, self.keys, self.id, target, **SMALL)


@pytest.mark.parametrize("size", [8 * MIB, 8 * MIB + 12345, 100, 0], ids=["aligned", "odd", "tiny", "empty"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_full_backup_restores_byte_for_byte(tmp_path, size, encrypted):
    disk = make_disk(tmp_path / "disk", size, extent=128 << 10)
    vault = Vault(encrypted)
    result = vault.backup(disk)
    assert result.logical_bytes == size
    manifest = load_manifest(vault.store, vault.keys, vault.id, result.manifest_id)
    assert manifest == result.manifest
    restored = vault.restore(manifest, tmp_path / "restored")
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)
    assert os.path.getsize(tmp_path / "restored") == size
    assert allocated_bytes(tmp_path / "restored") <= allocated_bytes(disk) + 4096  # holes stay holes
    assert restored.written_bytes == result.read_bytes - _zero_bytes_read(disk, manifest)


def _zero_bytes_read(disk, manifest):
    """Bytes of allocated-but-zero blocks: read by the backup, not written by the restore."""
    with open(disk, "rb") as f:
        data = f.read()
    return sum(manifest.block_length(i) for i in range(manifest.block_count)
               if manifest.zero[i] and data[i * BS:(i + 1) * BS].strip(b"\0") == b""
               and _allocated(disk, i * BS))


def _allocated(path, offset):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) == offset
    except OSError:
        return False
    finally:
        os.close(fd)


def test_disk_of_only_holes(tmp_path):
    disk = make_disk(tmp_path / "disk", 16 * MIB, holes=1.0)
    vault = Vault()
    result = vault.backup(disk)
    assert result.read_bytes == 0 and result.new_chunks == 0 and result.data_blocks == 0
    restored = vault.restore(result.manifest, tmp_path / "restored")
    assert restored.written_bytes == 0
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)
    assert allocated_bytes(tmp_path / "restored") == 0


def test_allocated_zeros_are_not_stored(tmp_path):
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.write(bytes(2 * MIB) + b"x" * BS)  # written zeros: allocated, but zero blocks
    vault = Vault()
    result = vault.backup(disk)
    assert result.data_blocks == 1 and result.new_chunks == 1
    assert result.read_bytes == 2 * MIB + BS
    vault.restore(result.manifest, tmp_path / "restored")
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)


def test_incremental_stores_only_changed_blocks(tmp_path):
    disk = make_disk(tmp_path / "disk", 16 * MIB)
    vault = Vault()
    full = vault.backup(disk)
    again = vault.backup(disk)
    assert again.new_chunks == 0  # the vault has every chunk already, even without a parent
    changed = rewrite_blocks(disk, BS, 7)
    incr = vault.backup(disk, parent=full.manifest)
    assert incr.new_chunks == len(changed)
    assert incr.stored_bytes_added < len(changed) * (BS + 100) + 64 * 1024  # + the manifest
    assert incr.reused_chunks == full.manifest.data_block_count - sum(
        1 for b in changed if not full.manifest.zero[b])
    vault.restore(incr.manifest, tmp_path / "restored")
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)


def test_in_place_restore_writes_only_what_differs(tmp_path):
    disk = make_disk(tmp_path / "disk", 16 * MIB + 777)
    vault = Vault()
    full = vault.backup(disk)
    original = sha256_file(disk)
    changed = rewrite_blocks(disk, BS, 9)
    result = vault.restore(full.manifest, disk, in_place=True)
    assert sha256_file(disk) == original
    became_data = [b for b in changed if full.manifest.zero[b]]  # were holes: must be punched again
    assert result.written_blocks == len(changed) - len(became_data)
    assert result.zeroed_blocks == len(became_data) and result.zeroed_bytes == len(became_data) * BS
    assert result.written_bytes == len(changed) * BS  # every changed block was rewritten: with data or zeros
    again = vault.restore(full.manifest, disk, in_place=True)  # already equal: nothing to do
    assert again.written_blocks == 0 and again.zeroed_blocks == 0


def test_in_place_restore_of_a_disk_that_changed_size(tmp_path):
    disk = make_disk(tmp_path / "disk", 4 * MIB + 100)
    vault = Vault()
    full = vault.backup(disk)
    original = sha256_file(disk)
    for size in (6 * MIB, 3 * MIB):
        os.truncate(disk, size)
        vault.restore(full.manifest, disk, in_place=True)
        assert sha256_file(disk) == original


def test_corrupt_chunk_is_data_loss_and_never_written(tmp_path):
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0, text=0.0)  # random: every chunk stored bare
    vault = Vault()
    full = vault.backup(disk)
    index, victim = next(iter(full.manifest.data_blocks()))
    corrupt_chunk(vault.store, vault.keys, vault.id, victim)
    bad = stored_value(vault.store, vault.keys, vault.id, victim)
    with pytest.raises(ChunkCorruptError):
        vault.restore(full.manifest, tmp_path / "restored")
    with open(tmp_path / "restored", "rb") as f:
        f.seek(index * BS)
        assert f.read(BS) != bytes(bad)
    drop_chunk(vault.store, vault.keys, vault.id, victim)
    with pytest.raises(ChunkMissingError):
        vault.restore(full.manifest, tmp_path / "restored2")


def test_disk_written_during_backup_backs_up_the_snapshot(tmp_path):
    disk = make_disk(tmp_path / "disk", 8 * MIB)
    writers_held = threading.Lock()  # what a provider's write lock would be
    stop = threading.Event()
    writes = [0]

    def keep_writing():
        import random
        rng = random.Random(5)
        with open(disk, "r+b", buffering=0) as f:
            while not stop.is_set():
                with writers_held:
                    f.seek(rng.randrange(8 * MIB - 4096))
                    f.write(rng.randbytes(4096))
                    writes[0] += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while writes[0] < 20:
            pass

        class Frozen:
            def __enter__(self):
                writers_held.acquire()
                self.instant = sha256_file(disk)  # the disk at the snapshot's instant

            def __exit__(self, *exc):
                writers_held.release()

        frozen = Frozen()
        snapshot = take_snapshot(disk, tmp_path / "snap", quiesce=frozen)
        before = writes[0]
        vault = Vault()
        result = vault.backup(snapshot.path)
        assert writes[0] > before  # the disk kept changing during the backup
    finally:
        stop.set()
        writer.join()
    vault.restore(result.manifest, tmp_path / "restored")
    assert sha256_file(tmp_path / "restored") == sha256_file(snapshot.path) == frozen.instant
    assert sha256_file(disk) != frozen.instant
    snapshot.release()
    assert not os.path.exists(snapshot.path)


def test_snapshot_copy_keeps_holes(tmp_path):
    disk = make_disk(tmp_path / "disk", 8 * MIB + 5, holes=0.5)
    snapshot = take_snapshot(disk, tmp_path / "snap", allow_clone=False)
    assert not snapshot.reflinked
    assert sha256_file(snapshot.path) == sha256_file(disk)
    assert allocated_bytes(snapshot.path) <= allocated_bytes(disk)


def test_lookups_are_batched_and_left_out_in_an_empty_vault(tmp_path):
    disk = make_disk(tmp_path / "disk", 16 * MIB, holes=0.0)
    vault = Vault()
    full = vault.backup(disk)
    assert [call for call, _ in vault.index.calls].count("touch_existing") == 0  # the vault had no chunk
    assert [call for call, _ in vault.index.calls].count("record_new") == 1
    vault.index.calls.clear()
    again = vault.backup(disk)  # a full backup into a vault that has chunks: one lookup per piece at most
    pieces = 16 * MIB // SMALL["buffer_size"]
    touches = [n for call, n in vault.index.calls if call == "touch_existing"]
    assert len(touches) <= pieces and max(touches) > 1 and again.new_chunks == 0
    vault.index.calls.clear()
    vault.backup(disk, parent=full.manifest)
    touches = [n for call, n in vault.index.calls if call == "touch_existing"]
    assert touches == [len(full.manifest.unique_ids())]  # one batch for the parent, none per piece


def test_pipeline_keeps_at_most_depth_buffers_in_flight():
    in_flight, peak, lock = [0], [0], threading.Lock()
    gate = threading.Event()

    def work(piece, buffer):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        gate.wait(0.01)
        with lock:
            in_flight[0] -= 1

    run_pipeline(plan_pieces([(0, 60)], 4096, 60 * 4096, 4096), work, workers=4, buffer_size=4096, depth=3)
    assert peak[0] <= 3


def test_one_dictionary_per_vault(tmp_path):
    vault = Vault()
    vault.backup(make_disk(tmp_path / "a", 2 * MIB, holes=0.0, text=1.0, seed=1))
    vault.backup(make_disk(tmp_path / "b", 2 * MIB, holes=0.0, text=1.0, seed=2))
    assert len(list(vault.store.iterate(f"{vault.id}/dicts/"))) == 1


def test_blocks_shared_with_the_previous_snapshot_are_not_read(tmp_path, monkeypatch):
    """The reflink path, simulated: ext4 has no shared extents, so FIEMAP's answer is stubbed."""
    import cbr_backup.datapath.disk_backup as disk_backup
    disk = make_disk(tmp_path / "disk", 8 * MIB, holes=0.0)
    vault = Vault()
    full = vault.backup(disk)
    changed = rewrite_blocks(disk, BS, 4)
    blocks = full.manifest.block_count
    monkeypatch.setattr(disk_backup, "changed_since", lambda *a: [(b * BS, (b + 1) * BS) for b in sorted(changed)])
    (tmp_path / "previous").write_bytes(b"")  # stands for the parent's kept snapshot
    incr = vault.backup(disk, parent=full.manifest, previous_snapshot=tmp_path / "previous")
    assert incr.read_bytes == len(changed) * BS  # only the blocks the snapshots no longer share
    assert incr.new_chunks == len(changed)
    vault.restore(incr.manifest, tmp_path / "restored")
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)

    # A shared block whose chunk the index no longer has (GC, quarantine) is read and stored again.
    gone = full.manifest.block_id(min(set(range(blocks)) - set(changed)))
    drop_chunk(vault.store, vault.keys, vault.id, gone, vault.index)
    again = vault.backup(disk, parent=full.manifest, previous_snapshot=tmp_path / "previous")
    assert again.read_bytes == (len(changed) + 1) * BS and again.new_chunks == 1
    vault.restore(again.manifest, tmp_path / "restored2")
    assert sha256_file(tmp_path / "restored2") == sha256_file(disk)
