"""GC's cutoff and phases, and verify's verdicts and quarantine, over the in-memory index and store."""
import datetime as dt
import os
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, restore_to_new_disk
from cbr_backup.datapath import gc as gc_module
from cbr_backup.datapath.disk_backup import TOUCH_MARGIN, chunk_key, manifest_key
from cbr_backup.datapath.gc import collect_garbage, gc_cutoff
from cbr_backup.datapath.verify import quarantine_key, verify_chunks
from tests.support.packs import corrupt_chunk, drop_chunk, stored_value, to_lone_chunks
from tests.unit.backup.datapath.disk_images import MIB, make_disk, rewrite_blocks, sha256_file

BS = 64 << 10
SMALL = dict(block_size=BS, buffer_size=256 << 10, workers=2)
T0 = dt.datetime(2030, 1, 1, 12, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


@pytest.mark.parametrize("grace, exclusive, oldest, cutoff", [
    (24 * H, True, None, T0 - 24 * H),
    (24 * H, True, T0 - 30 * H, T0 - 24 * H),          # exclusive: no backup runs, whatever a row says
    (0 * H, True, None, T0),
    (24 * H, False, None, T0 - 24 * H),
    (0 * H, False, None, T0 - TOUCH_MARGIN),             # never closer than the backups' touch margin
    (24 * H, False, T0 - 30 * H, T0 - 30 * H - TOUCH_MARGIN),
    (24 * H, False, T0 - 2 * H, T0 - 24 * H),
    (0 * H, False, T0 - 2 * H, T0 - 2 * H - TOUCH_MARGIN),
])
def test_cutoff(grace, exclusive, oldest, cutoff):
    assert gc_cutoff(T0, grace, exclusive, oldest) == cutoff


def test_negative_grace_and_a_future_start_are_refused():
    with pytest.raises(ValueError):
        gc_cutoff(T0, -H, True, None)
    index = MemoryChunkIndex()
    with pytest.raises(ValueError):  # marks would then be older than the cutoff and sweep live chunks
        collect_garbage(index, MemoryChunkStore(), "v", lambda: (), live_manifest_ids=set(), grace=H,
                        oldest_running_start=None, now=index.now() + H)


def test_memory_vault_lock():
    index, vault_id = MemoryChunkIndex(), "v"
    assert index.lock_vault(vault_id, exclusive=False) and index.lock_vault(vault_id, exclusive=False)
    assert not index.lock_vault(vault_id, exclusive=True, wait=False)
    assert index.unlock_vault(vault_id, exclusive=False) and index.unlock_vault(vault_id, exclusive=False)
    assert not index.unlock_vault(vault_id, exclusive=False)
    assert index.lock_vault(vault_id, exclusive=True, wait=False)
    assert not index.lock_vault(vault_id, exclusive=False, wait=False)
    assert index.unlock_vault(vault_id, exclusive=True)


def _two_backups(tmp_path):
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32))
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    disk = make_disk(tmp_path / "disk", 2 * MIB)
    a = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    rewrite_blocks(disk, BS, 6)
    b = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    return vault_id, keys, store, index, disk, a, b


def test_gc_in_memory(tmp_path, monkeypatch):
    vault_id, keys, store, index, disk, a, b = _two_backups(tmp_path)
    monkeypatch.setattr(gc_module, "MARK_BATCH", 5)
    marks = []
    real_mark = index.mark
    index.mark = lambda vault, ids, since=None: marks.append(len(ids)) or real_mark(vault, ids, since)
    store.put(chunk_key(vault_id, os.urandom(32)), b"orphan")

    def live_manifests():
        assert not index.lock_vault(vault_id, exclusive=False, wait=False)  # read while GC holds the lock
        return {b.manifest_id}

    result = collect_garbage(index, store, vault_id, lambda: iter(b.manifest.unique_ids()),
                             live_manifest_ids=live_manifests, grace=dt.timedelta(0), oldest_running_start=None)
    a_only = a.manifest.unique_ids() - b.manifest.unique_ids()
    assert result.exclusive and result.deleted_chunks == len(a_only) and result.orphans_deleted == 1
    assert result.manifests_deleted == 1 and set(store.iterate(f"{vault_id}/manifests/")) == {
        manifest_key(vault_id, b.manifest_id)}
    assert max(marks) <= 5 and sum(marks) == len(b.manifest.unique_ids())  # streamed in batches
    assert index.count(vault_id) == len(b.manifest.unique_ids())
    assert index.lock_vault(vault_id, exclusive=True, wait=False)  # released
    restore_to_new_disk(b.manifest, store, keys, vault_id, tmp_path / "restored", workers=2)
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)


def test_gc_beside_a_backup_leaves_orphans_and_manifests(tmp_path):
    vault_id, keys, store, index, disk, a, b = _two_backups(tmp_path)
    index.lock_vault(vault_id, exclusive=False)  # a backup is running
    orphan = chunk_key(vault_id, os.urandom(32))
    store.put(orphan, b"maybe a running backup's chunk, not indexed yet")
    asked = []

    def not_asked():
        raise AssertionError("live manifests are only read under the exclusive lock")

    start = index.now()
    result = collect_garbage(index, store, vault_id, lambda: (), live_manifest_ids=not_asked, grace=H,
                             oldest_running_start=lambda: asked.append(1) or start - 48 * H, now=start)
    assert not result.exclusive and asked == [1] and result.cutoff == start - 49 * H
    assert (result.deleted_chunks, result.orphans_deleted, result.manifests_deleted) == (0, 0, 0)
    assert store.exists_many([orphan]) == {orphan}
    assert index.unlock_vault(vault_id, exclusive=False)


class FirstReadCorrupt(MemoryChunkStore):
    """Returns garbage for one key the first time it is read (a value a backup replaced meanwhile)."""

    def __init__(self):
        super().__init__()
        self.flaky: str | None = None

    def get(self, key):
        if key == self.flaky:
            self.flaky = None
            return b"\x01garbage"
        return super().get(key)


def test_verify_verdicts_and_quarantine_of_lone_chunks(tmp_path):
    """A vault from before packs: one object per chunk."""
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32))
    store, index = FirstReadCorrupt(), MemoryChunkIndex()
    a = backup_disk(make_disk(tmp_path / "disk", 2 * MIB, holes=0.0), keys, store, index, vault_id, **SMALL)
    assert to_lone_chunks(store, keys, vault_id, index) == len(a.manifest.unique_ids())
    ids = sorted(a.manifest.unique_ids())
    corrupt, missing, replaced, unindexed, unindexed_bad = ids[:5]
    value = bytearray(store.get(chunk_key(vault_id, corrupt)))
    value[-1] ^= 1
    store.delete(chunk_key(vault_id, corrupt))
    store.put(chunk_key(vault_id, corrupt), bytes(value))
    store.delete(chunk_key(vault_id, missing))
    store.flaky = chunk_key(vault_id, replaced)
    index.forget(vault_id, [unindexed, unindexed_bad])
    store.delete(chunk_key(vault_id, unindexed_bad))
    store.put(chunk_key(vault_id, unindexed_bad), b"\x02" + os.urandom(100))
    stray = os.urandom(32)  # neither indexed nor stored

    result = verify_chunks(index, store, keys, vault_id, ids + [stray], raw_sizes={unindexed_bad: BS}, batch=4)

    assert result.bad_chunks == {
        corrupt: "corrupt: authentication failed (wrong key or altered bytes)", missing: "missing",
        replaced: "corrupt: not encrypted in an encrypted vault",
        unindexed: "missing",  # stored, but neither the index nor the caller says what size it should be
        unindexed_bad: "corrupt: authentication failed (wrong key or altered bytes)", stray: "missing"}
    assert result.checked_chunks == len(ids) + 1
    assert result.quarantined == 2  # corrupt and missing; replaced is sound when re-checked under the lock
    assert set(index.sizes(vault_id, ids[:5])) == {replaced}
    assert store.get(quarantine_key(vault_id, corrupt)) == bytes(value)
    assert not store.exists_many([quarantine_key(vault_id, missing)])
    # Unindexed values stay: a backup never reuses them without decoding them, and may be replacing them.
    keys_left = store.exists_many(chunk_key(vault_id, chunk) for chunk in ids[:5])
    assert keys_left == {chunk_key(vault_id, chunk) for chunk in (replaced, unindexed, unindexed_bad)}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_verify_verdicts_and_quarantine_of_packed_chunks(tmp_path, encrypted):
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    a = backup_disk(make_disk(tmp_path / "disk", 2 * MIB, holes=0.0, text=0.0), keys, store, index, vault_id,
                    **SMALL)
    ids = sorted(a.manifest.unique_ids())
    corrupt, missing = ids[:2]
    corrupt_chunk(store, keys, vault_id, corrupt)
    bad_value = stored_value(store, keys, vault_id, corrupt)
    drop_chunk(store, keys, vault_id, missing)
    index.rows[(vault_id, missing)][4] = os.urandom(16)  # its row names a pack that is gone

    result = verify_chunks(index, store, keys, vault_id, ids, batch=4)
    assert set(result.bad_chunks) == {corrupt, missing} and result.bad_chunks[missing] == "missing"
    assert result.quarantined == 2 and index.sizes(vault_id, [corrupt, missing]) == {}
    assert store.get(quarantine_key(vault_id, corrupt)) == bad_value
    assert verify_chunks(index, store, keys, vault_id, ids[2:]).bad_chunks == {}  # the pack's others are fine


def test_verify_without_quarantine_and_stopped_by_progress(tmp_path):
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32))
    store, index = MemoryChunkStore(), MemoryChunkIndex()
    a = backup_disk(make_disk(tmp_path / "disk", 2 * MIB, holes=0.0), keys, store, index, vault_id, **SMALL)
    ids = sorted(a.manifest.unique_ids())
    for chunk, gone_pack in ((ids[0], bytes(16)), (ids[-1], b"\xff" * 16)):  # verify's first and last in pack order
        drop_chunk(store, keys, vault_id, chunk)
        index.rows[(vault_id, chunk)][4] = gone_pack

    report = verify_chunks(index, store, keys, vault_id, ids, quarantine=False)
    assert set(report.bad_chunks) == {ids[0], ids[-1]} and report.quarantined == 0
    assert len(index.sizes(vault_id, ids)) == len(ids)

    class Stop(Exception):
        pass

    def progress(done, total):
        raise Stop

    with pytest.raises(Stop):
        verify_chunks(index, store, keys, vault_id, ids, progress=progress, batch=4)
    assert set(index.sizes(vault_id, ids)) == set(ids) - {ids[0]}  # the first batch was handled, then it stopped
