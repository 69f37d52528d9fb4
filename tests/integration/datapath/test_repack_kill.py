"""kill -9 of a GC process in the middle of a repack loses nothing (DESIGN.md 13.4): real Postgres, FsChunkStore."""
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from cbr_backup.adapters.chunk_index import ChunkIndex
from cbr_backup.chunkstore import FsChunkStore
from cbr_backup.datapath import VaultKeys, backup_disk, restore_to_new_disk
from cbr_backup.datapath.gc import collect_garbage
from cbr_backup.datapath.verify import verify_chunks
from tests.unit.backup.datapath.disk_images import MIB, make_disk, sha256_file

BS = 64 << 10
PACK = 256 << 10
SMALL = dict(block_size=BS, buffer_size=256 << 10, workers=1, pack_target=PACK)

# The GC process: kills itself with SIGKILL at the given step of its repack (nothing after it runs, no cleanup).
CHILD = textwrap.dedent("""
    import datetime as dt, os, signal, sys
    from cbr_backup.adapters.chunk_index import ChunkIndex
    from cbr_backup.chunkstore import FsChunkStore
    from cbr_backup.datapath import VaultKeys, load_manifest
    from cbr_backup.datapath import gc
    url, root, vault_id, id_key, enc_key, manifest_id, step = sys.argv[1:]
    keys = VaultKeys(bytes.fromhex(id_key), bytes.fromhex(enc_key))
    store, index = FsChunkStore(root), ChunkIndex(url)
    manifest = load_manifest(store, keys, vault_id, manifest_id)
    gc._repack_step = lambda at: at == step and os.kill(os.getpid(), signal.SIGKILL)
    gc.collect_garbage(index, store, vault_id, lambda: iter(manifest.unique_ids()), live_manifest_ids={manifest_id},
                       grace=dt.timedelta(0), oldest_running_start=None, keys=keys, repack_fraction=0.5)
    print("finished without being killed")
""")


@pytest.fixture
def index(infra):
    index = ChunkIndex(infra.postgres.url)
    yield index
    index.close()


def _overwrite(disk, blocks):
    with open(disk, "r+b") as f:
        for b in blocks:
            f.seek(b * BS)
            f.write(os.urandom(BS))


def _packs(store, vault_id):
    prefix = f"{vault_id}/packs/"
    return {bytes.fromhex(key[len(prefix):]) for key in store.iterate(prefix)}


@pytest.mark.parametrize("step", ["new packs durable", "rows moved"])
def test_kill_9_during_repack_loses_nothing(tmp_path, infra, index, step):
    vault_id, keys = str(uuid.uuid4()), VaultKeys(os.urandom(32), os.urandom(32))
    store = FsChunkStore(tmp_path / "store")
    disk = make_disk(tmp_path / "disk", 4 * MIB, holes=0.0, text=0.0)
    a = backup_disk(disk, keys, store, index, vault_id, **SMALL)
    _overwrite(disk, [b for b in range(32) if b % 4])  # 8 packs keep a quarter of their chunks live
    b = backup_disk(disk, keys, store, index, vault_id, parent=a.manifest, **SMALL)
    b_hash = sha256_file(disk)

    child = tmp_path / "gc_child.py"
    child.write_text(CHILD)
    done = subprocess.run([sys.executable, str(child), infra.postgres.url, str(store.root), vault_id,
                           keys.id_key.hex(), keys.enc_key.hex(), b.manifest_id, step],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr

    def restores(name):
        restore_to_new_disk(b.manifest, store, keys, vault_id, tmp_path / name, workers=2, index=index)
        return sha256_file(tmp_path / name) == b_hash

    locations = index.locations(vault_id, b.manifest.unique_ids())
    assert len(locations) == len(b.manifest.unique_ids())
    assert {where[0] for where in locations.values()} <= _packs(store, vault_id)  # every row names a stored pack
    assert restores("after-kill")
    assert verify_chunks(index, store, keys, vault_id, b.manifest.unique_ids()).bad_chunks == {}

    # The killed process's connection took its exclusive lock with it: the next GC finishes the job.
    again = collect_garbage(index, store, vault_id, lambda: iter(b.manifest.unique_ids()),
                            live_manifest_ids={b.manifest_id}, grace=dt.timedelta(0), oldest_running_start=None,
                            keys=keys, repack_fraction=0.5)
    assert again.exclusive
    live = {where[0] for where in index.locations(vault_id, b.manifest.unique_ids()).values()}
    assert _packs(store, vault_id) == live  # no leftover pack of the killed repack
    assert restores("after-second-gc")
