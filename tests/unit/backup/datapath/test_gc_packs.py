"""GC with pack files (DESIGN.md 13.4): dead packs deleted, sparse packs repacked, a crash mid-repack loses nothing."""
import os
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, restore_to_new_disk
from cbr_backup.datapath import gc as gc_module
from cbr_backup.datapath.gc import collect_garbage
from cbr_backup.datapath.verify import verify_chunks
from tests.support.packs import packed_chunks, to_lone_chunks
from tests.unit.backup.datapath.disk_images import MIB, make_disk, sha256_file

BS = 64 << 10
PACK = 256 << 10  # ~4 random blocks per pack
SMALL = dict(block_size=BS, buffer_size=256 << 10, workers=1, pack_target=PACK)  # one worker: packs in disk order


class Vault:
    def __init__(self, tmp_path, encrypted=True):
        self.tmp = tmp_path
        self.id = str(uuid.uuid4())
        self.keys = VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)
        self.store, self.index = MemoryChunkStore(), MemoryChunkIndex()

    def backup(self, disk, **kw):
        return backup_disk(disk, self.keys, self.store, self.index, self.id, **{**SMALL, **kw})

    def gc(self, live, **kw):
        return collect_garbage(self.index, self.store, self.id,
                               lambda: (c for r in live for c in r.manifest.unique_ids()),
                               live_manifest_ids={r.manifest_id for r in live}, grace=gc_module.dt.timedelta(0),
                               oldest_running_start=None, keys=self.keys, **kw)

    def packs(self) -> set[bytes]:
        prefix = f"{self.id}/packs/"
        return {bytes.fromhex(k[len(prefix):]) for k in self.store.iterate(prefix)}

    def restores(self, result, disk_hash, name) -> bool:
        for via, suffix in ((self.index, ""), (None, "-trailers")):
            restore_to_new_disk(result.manifest, self.store, self.keys, self.id, self.tmp / (name + suffix),
                                workers=2, index=via)
            if sha256_file(self.tmp / (name + suffix)) != disk_hash:
                return False
        return True

    def rows_name_stored_packs(self) -> bool:
        return {row[4] for row in self.index.rows.values() if row[4] is not None} <= self.packs()


def _overwrite(disk, blocks):
    with open(disk, "r+b") as f:
        for b in blocks:
            f.seek(b * BS)
            f.write(os.urandom(BS))


def _a_then_b(vault):
    """a: a 4 MiB random disk (16 packs of 4 blocks). b: the same disk with blocks 0-15 (4 packs) rewritten and
    3 of every 4 blocks of 16-31 rewritten (4 packs 25% live). Only b stays live."""
    disk = make_disk(vault.tmp / "disk", 4 * MIB, holes=0.0, text=0.0)
    a = vault.backup(disk)
    _overwrite(disk, list(range(16)) + [b for b in range(16, 32) if b % 4])
    b = vault.backup(disk, parent=a.manifest)
    return disk, a, b


def test_dead_packs_go_and_sparse_packs_are_repacked(tmp_path):
    vault = Vault(tmp_path)
    disk, a, b = _a_then_b(vault)
    before = vault.packs()
    assert len(before) >= 20
    result = vault.gc([b], repack_fraction=0.5)

    assert result.exclusive and result.packs_deleted == 4 + 0  # blocks 0-15: nothing live (16-31 are repacked)
    # the 4 live blocks of 16-31, as stored (encrypted: a header, a nonce and a tag each)
    assert result.packs_repacked == 4 and 4 * BS < result.rewritten_bytes < 4 * (BS + 64)
    # 4 dead packs (16 blocks) and the 4 sparse ones (16), less the 4 blocks copied: 28 blocks
    assert 27 * BS < result.reclaimed_bytes < 29 * BS
    after = vault.packs()
    assert len(before - after) == 8 and len(after - before) == 1  # the 4 live blocks share one new pack
    assert vault.rows_name_stored_packs()
    assert vault.restores(b, sha256_file(disk), "b")
    assert verify_chunks(vault.index, vault.store, vault.keys, vault.id, b.manifest.unique_ids()).bad_chunks == {}
    again = vault.gc([b], repack_fraction=0.5)  # nothing left to do
    assert (again.packs_deleted, again.packs_repacked, again.rewritten_bytes) == (0, 0, 0)


def test_without_the_exclusive_lock_only_packs_whose_rows_were_swept_go(tmp_path):
    vault = Vault(tmp_path)
    disk, a, b = _a_then_b(vault)
    orphan = f"{vault.id}/packs/{os.urandom(16).hex()}"
    vault.store.put(orphan, b"a running backup's pack, its rows not inserted yet")
    for row in vault.index.rows.values():
        row[3] -= 2 * gc_module.TOUCH_MARGIN  # the backups ran a while ago
    vault.index.lock_vault(vault.id, exclusive=False)  # a backup is running
    result = vault.gc([b], repack_fraction=0.5)
    assert not result.exclusive and result.packs_deleted == 4 and result.packs_repacked == 0
    assert vault.store.exists_many([orphan]) == {orphan}
    assert vault.restores(b, sha256_file(disk), "b")


@pytest.mark.parametrize("step", ["new packs durable", "rows moved"])
def test_a_crash_during_repack_loses_nothing(tmp_path, monkeypatch, step):
    vault = Vault(tmp_path)
    disk, a, b = _a_then_b(vault)

    def crash(at):
        if at == step:
            raise SystemExit("killed")  # what a kill at this point leaves: nothing after it ran
    monkeypatch.setattr(gc_module, "_repack_step", crash)
    with pytest.raises(SystemExit):
        vault.gc([b], repack_fraction=0.5)
    assert vault.rows_name_stored_packs()
    assert vault.restores(b, sha256_file(disk), "crashed")
    vault.index.unlock_vault(vault.id, exclusive=True)  # a killed GC's connection would have dropped it

    monkeypatch.undo()
    after = vault.gc([b], repack_fraction=0.5)
    assert after.exclusive and vault.rows_name_stored_packs()
    live_packs = {row[4] for row in vault.index.rows.values()}
    assert vault.packs() == live_packs  # the leftover (new or old) pack is gone
    assert vault.restores(b, sha256_file(disk), "after")


def test_gc_of_a_vault_from_before_packs(tmp_path):
    """Lone chunk objects and their rows: swept as before, reclaimed bytes counted; new packed chunks beside."""
    vault = Vault(tmp_path, encrypted=False)
    disk = make_disk(tmp_path / "disk", 2 * MIB, holes=0.0, text=0.0)
    a = vault.backup(disk)
    to_lone_chunks(vault.store, vault.keys, vault.id, vault.index)
    _overwrite(disk, [0, 1, 2])
    b = vault.backup(disk, parent=a.manifest)
    result = vault.gc([b])
    assert result.deleted_chunks == 3 and result.reclaimed_bytes == 3 * BS
    assert not set(vault.store.iterate(f"{vault.id}/chunks/")) & {
        f"{vault.id}/chunks/{c.hex()}" for c in a.manifest.unique_ids() - b.manifest.unique_ids()}
    assert set(packed_chunks(vault.store, vault.keys, vault.id)) == b.manifest.unique_ids() - a.manifest.unique_ids()
    assert vault.restores(b, sha256_file(disk), "b")
