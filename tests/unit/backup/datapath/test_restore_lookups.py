"""A new-disk restore asks the index where its chunks live a window of pieces at a time, not once per piece."""
import os

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, restore_to_new_disk

from tests.unit.backup.datapath.disk_images import MIB, sha256_file, make_disk


class CountingIndex(MemoryChunkIndex):
    def __init__(self):
        super().__init__()
        self.location_calls: list[int] = []

    def locations(self, vault_id, ids):
        ids = list(ids)
        self.location_calls.append(len(ids))
        return super().locations(vault_id, ids)


def test_a_new_disk_restore_looks_locations_up_in_windows(tmp_path):
    disk = make_disk(tmp_path / "disk.raw", 24 * MIB, seed=5)
    keys, store, index = VaultKeys(os.urandom(32), os.urandom(32)), MemoryChunkStore(), CountingIndex()
    result = backup_disk(disk, keys, store, index, "v", block_size=64 << 10, buffer_size=MIB)
    data_blocks = result.manifest.data_block_count
    assert data_blocks > 100  # many 1 MiB pieces of 16 blocks each

    restore_to_new_disk(result.manifest, store, keys, "v", tmp_path / "out.raw", buffer_size=MIB, index=index)

    assert sha256_file(tmp_path / "out.raw") == sha256_file(disk)
    # One window (4096 ids) holds every block here: one lookup for the whole disk, with every id in it.
    assert index.location_calls == [len(set(result.manifest.unique_ids()))]


def test_a_restore_without_its_windows_still_finds_every_chunk(tmp_path, monkeypatch):
    """A lookup that fails for a window leaves its pieces to look up their own chunks (and meet the error)."""
    disk = make_disk(tmp_path / "disk.raw", 8 * MIB, seed=6)
    keys, store, index = VaultKeys(os.urandom(32)), MemoryChunkStore(), CountingIndex()
    result = backup_disk(disk, keys, store, index, "v", block_size=64 << 10, buffer_size=MIB)
    from cbr_backup.datapath import disk_restore
    monkeypatch.setattr(disk_restore._LocationsAhead, "_ids", lambda self, w: set())  # windows find nothing

    restore_to_new_disk(result.manifest, store, keys, "v", tmp_path / "out.raw", buffer_size=MIB, index=index)

    assert sha256_file(tmp_path / "out.raw") == sha256_file(disk)
    assert len(index.location_calls) > 1  # each piece asked for its own


def test_windows_follow_the_disk_and_stay_bounded(tmp_path, monkeypatch):
    from cbr_backup.datapath import disk_restore
    monkeypatch.setattr(disk_restore, "LOCATION_WINDOW_IDS", 40)
    disk = make_disk(tmp_path / "disk.raw", 24 * MIB, seed=7)
    keys, store, index = VaultKeys(os.urandom(32)), MemoryChunkStore(), CountingIndex()
    result = backup_disk(disk, keys, store, index, "v", block_size=64 << 10, buffer_size=MIB)

    restore_to_new_disk(result.manifest, store, keys, "v", tmp_path / "out.raw", buffer_size=MIB, index=index)

    assert sha256_file(tmp_path / "out.raw") == sha256_file(disk)
    # Windows of at least 40 ids, cut on 16-block pieces: a few lookups (a straggler may repeat one), none
    # larger than a window can be.
    assert 2 <= len(index.location_calls) <= 2 * (result.manifest.data_block_count // 40 + 1)
    assert max(index.location_calls) < 40 + 16
