"""The data path against a real Postgres chunk index and a file-system chunk store, and its command line."""
import json
import os
import subprocess
import sys
import uuid

import pytest

from cbr_backup.adapters.chunk_index import ChunkIndex
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, restore_in_place, restore_to_new_disk
from cbr_backup.datapath.verify import verify_chunks
from tests.support.packs import to_lone_chunks
from tests.unit.backup.datapath.disk_images import MIB, make_disk, rewrite_blocks, sha256_file

BS = 64 << 10


@pytest.fixture(scope="module")
def index(infra):
    index = ChunkIndex(infra.postgres.url, batch_size=50)  # small batches: several per call
    yield index
    index.close()


def test_full_incremental_and_restores(tmp_path, index):
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32))
    store = FsChunkStore(tmp_path / "store")
    disk = make_disk(tmp_path / "disk", 24 * MIB + 4321)
    original = sha256_file(disk)

    full = backup_disk(disk, keys, store, index, vault_id, block_size=BS, buffer_size=1 << 20)
    assert index.count(vault_id) == len(full.manifest.unique_ids()) == full.new_chunks
    again = backup_disk(disk, keys, store, index, vault_id, block_size=BS)
    assert again.new_chunks == 0 and index.count(vault_id) == full.new_chunks

    changed = rewrite_blocks(disk, BS, 11)
    incr = backup_disk(disk, keys, store, index, vault_id, block_size=BS, parent=full.manifest)
    assert incr.new_chunks == len(changed)
    assert index.count(vault_id) == full.new_chunks + len(changed)

    restore_to_new_disk(incr.manifest, store, keys, vault_id, tmp_path / "new")
    assert sha256_file(tmp_path / "new") == sha256_file(disk)
    result = restore_in_place(full.manifest, store, keys, vault_id, disk)
    assert sha256_file(disk) == original
    assert result.written_blocks + result.zeroed_blocks == len(changed)


def test_packs_and_batched_commits(tmp_path, index):
    """Chunks go to packs of about the target size; rows are indexed in durable batches and name their pack."""
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32))
    store = FsChunkStore(tmp_path / "store")
    disk = make_disk(tmp_path / "disk", 8 * MIB + 100, holes=0.0)
    full = backup_disk(disk, keys, store, index, vault_id, block_size=BS, buffer_size=1 << 20, commit_every=9,
                       pack_target=MIB)
    packs = set(store.iterate(f"{vault_id}/packs/"))
    assert 2 <= len(packs) <= 9 and not list(store.iterate(f"{vault_id}/chunks/"))
    assert index.count(vault_id) == len(full.manifest.unique_ids()) == full.new_chunks
    where = index.locations(vault_id, full.manifest.unique_ids())
    assert {f"{vault_id}/packs/{w[0].hex()}" for w in where.values()} == packs
    for target, via in (("restored", index), ("restored-without-index", None)):  # trailers alone suffice
        restore_to_new_disk(full.manifest, store, keys, vault_id, tmp_path / target, index=via)
        assert sha256_file(tmp_path / target) == sha256_file(disk)


def test_a_vault_from_before_packs_keeps_working(tmp_path, index):
    """Chunks stored one object each with rows without a pack (the layout before migration backup_0007) are
    restored, reused by the next backup, and mixed with new packed chunks."""
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32))
    store = FsChunkStore(tmp_path / "store")
    disk = make_disk(tmp_path / "disk", 8 * MIB, holes=0.1)
    old = backup_disk(disk, keys, store, index, vault_id, block_size=BS)
    assert to_lone_chunks(store, keys, vault_id, index) == len(old.manifest.unique_ids())
    assert not list(store.iterate(f"{vault_id}/packs/"))
    restore_to_new_disk(old.manifest, store, keys, vault_id, tmp_path / "old", index=index)
    assert sha256_file(tmp_path / "old") == sha256_file(disk)

    rewrite_blocks(disk, BS, 5)
    new = backup_disk(disk, keys, store, index, vault_id, block_size=BS, parent=old.manifest)
    assert new.new_chunks == 5 and len(list(store.iterate(f"{vault_id}/packs/"))) == 1
    for manifest, target in ((new.manifest, "new"), (new.manifest, "new-no-index"), (old.manifest, "old2")):
        restore_to_new_disk(manifest, store, keys, vault_id, tmp_path / target,
                            index=None if target == "new-no-index" else index)
    assert sha256_file(tmp_path / "new") == sha256_file(tmp_path / "new-no-index") == sha256_file(disk)
    assert sha256_file(tmp_path / "old2") == sha256_file(tmp_path / "old")
    report = verify_chunks(index, store, keys, vault_id, old.manifest.unique_ids() | new.manifest.unique_ids())
    assert report.bad_chunks == {}


def test_index_touches_and_scopes_by_vault(index):
    vault_a, vault_b = str(uuid.uuid4()), str(uuid.uuid4())
    ids = [os.urandom(32) for _ in range(120)]
    index.record_new(vault_a, [(i, BS, 100) for i in ids])
    now = index.now()
    assert index.touch_existing(vault_a, ids + [os.urandom(32)], now) == set(ids)  # stale rows: touched
    assert index.touch_existing(vault_a, ids, now) == set(ids)                     # fresh rows: only read
    assert index.touch_existing(vault_b, ids, now) == set()
    index.record_new(vault_a, [(ids[0], BS, 100)])  # a second record of one id only touches it
    assert index.count(vault_a) == 120


def test_command_line_round_trip(tmp_path, infra):
    disk = make_disk(tmp_path / "disk", 8 * MIB + 5)
    common = ["--store", str(tmp_path / "store"), "--database-url", infra.postgres.url,
              "--vault-id", str(uuid.uuid4()), "--key-file", str(tmp_path / "vault.key")]

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "cbr_backup.datapath", *args, *common],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    full = cli("backup", "--disk", str(disk), "--block-size", str(BS))
    assert set(full) >= {"manifest_id", "logical_bytes", "read_bytes", "new_chunks", "stored_bytes_added",
                         "seconds"}
    assert len((tmp_path / "vault.key").read_bytes()) == 32
    rewrite_blocks(disk, BS, 3)
    incr = cli("backup", "--disk", str(disk), "--parent-manifest", full["manifest_id"], "--block-size", str(BS),
               "--snapshot-dir", str(tmp_path / "snaps"))
    assert incr["new_chunks"] == 3 and not os.listdir(tmp_path / "snaps")
    restored = cli("restore", "--manifest-id", incr["manifest_id"], "--target", str(tmp_path / "restored"))
    assert sha256_file(tmp_path / "restored") == sha256_file(disk)
    assert restored["written_bytes"] > 0
    in_place = cli("restore", "--manifest-id", full["manifest_id"], "--target", str(tmp_path / "restored"),
                   "--in-place")
    assert in_place["written_bytes"] <= 3 * BS


class _RacedIndex:
    """The index as a backup sees it that started while the vault was still empty."""

    def __init__(self, index):
        self.index = index

    def has_chunks(self, vault_id):
        return False

    def __getattr__(self, name):
        return getattr(self.index, name)


def test_a_first_backup_skips_lookups_and_a_racing_one_stores_chunks_twice_harmlessly(tmp_path, index):
    import datetime as dt

    from cbr_backup.datapath.gc import collect_garbage

    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32))
    store = FsChunkStore(tmp_path / "store")
    disk = make_disk(tmp_path / "disk", 8 * MIB + 100, holes=0.0)
    assert not index.has_chunks(vault_id)
    first = backup_disk(disk, keys, store, index, vault_id, block_size=BS, pack_target=MIB)
    assert index.has_chunks(vault_id)
    where = index.locations(vault_id, first.manifest.unique_ids())
    raced = backup_disk(disk, keys, store, _RacedIndex(index), vault_id, block_size=BS, pack_target=MIB)
    assert raced.new_chunks == first.new_chunks  # nothing looked up: every chunk stored again
    assert index.locations(vault_id, first.manifest.unique_ids()) == where  # the indexed values stay
    result = collect_garbage(index, store, vault_id, lambda: raced.manifest.unique_ids(),
                             live_manifest_ids=lambda: {first.manifest_id, raced.manifest_id},
                             grace=dt.timedelta(0), oldest_running_start=None)
    assert result.packs_deleted >= 1  # the racing backup's copies were dead bytes
    for manifest in (first.manifest, raced.manifest):
        restore_to_new_disk(manifest, store, keys, vault_id, tmp_path / "new")
        assert sha256_file(tmp_path / "new") == sha256_file(disk)
