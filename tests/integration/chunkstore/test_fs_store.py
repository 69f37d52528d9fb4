"""FsChunkStore beyond the contract: folder layout, crash leftovers, sync levels."""
from __future__ import annotations

import ctypes
import errno
import os
import time

import pytest

from cbr_backup.chunkstore import ChunkNotFoundError, FsChunkStore, StoreFullError
from cbr_backup import folders
from tests.support.mounts import small_file_system

NS = "3f2c8a1e-0b7d-4c55-9e61-2a9d7f0c4b11"
CHUNK_ID = "ab12" + "0" * 60
KEY = f"{NS}/chunks/{CHUNK_ID}"


def test_layout_is_prefix_folders(tmp_path):
    store = FsChunkStore(tmp_path)
    manifest_id = "4b0e9a2c-7d1f-4a3b-9c8e-6f5d2e1a0b97"
    expected = {
        KEY: tmp_path / NS / "chunks" / "ab" / CHUNK_ID,
        f"{NS}/manifests/{manifest_id}": tmp_path / NS / "manifests" / "4b" / manifest_id,
        f"{NS}/x/a": tmp_path / NS / "x~~" / "a_" / "a",  # short segments: padded folders
        "ab/cd": tmp_path / "ab~" / "cd" / "cd",
        "solo": tmp_path / "so" / "solo",
    }
    for key, path in expected.items():
        assert store.path_for(key) == path
        assert store.put(key, key.encode())
        assert path.read_bytes() == key.encode()
    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert files == set(expected.values())  # nothing else: no temp files, no markers
    with pytest.raises(ValueError):
        store.path_for("../etc/passwd")


def test_crash_leftover_temp_file_is_ignored(tmp_path):
    store = FsChunkStore(tmp_path)
    final = store.path_for(KEY)
    final.parent.mkdir(parents=True)
    leftover = final.with_name(f"{final.name}.tmp-0123456789abcdef0123456789abcdef")
    leftover.write_bytes(b"half a chu")  # a put that died before its link

    with pytest.raises(ChunkNotFoundError):
        store.get(KEY)
    assert list(store.iterate()) == []
    assert store.exists_many([KEY]) == set()

    assert store.put(KEY, b"the whole chunk") is True
    assert store.get(KEY) == b"the whole chunk"
    assert list(store.iterate()) == [KEY]

    assert store.remove_stale_temp_files() == 0  # younger than the default hour: may belong to a live put
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    assert store.remove_stale_temp_files() == 1
    assert not leftover.exists()
    assert store.get(KEY) == b"the whole chunk"


def test_stray_files_and_folders_are_not_keys(tmp_path):
    store = FsChunkStore(tmp_path)
    store.put(KEY, b"v")
    (tmp_path / "README").write_text("not a key")
    (tmp_path / NS / "chunks" / "ab" / "notes.txt").write_text("not a key")
    (tmp_path / NS / "chunks" / "weird.dir" / "ab").mkdir(parents=True)
    (tmp_path / NS / "chunks" / "weird.dir" / "ab" / "abc").write_text("under a folder no key maps to")
    (tmp_path / "~~~" / "ab").mkdir(parents=True)
    (tmp_path / "~~~" / "ab" / "abc").write_text("under a folder no key maps to")
    assert list(store.iterate()) == [KEY]


def test_sync_file_fsyncs_each_put(tmp_path, monkeypatch):
    store = FsChunkStore(tmp_path / "store", sync="file")
    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])

    assert store.put(KEY, b"durable") is True
    # the file, its fan folder's new entry and every folder created on the way, then the final name
    assert len(fsynced) >= 2
    fsynced.clear()
    assert store.put(f"{NS}/chunks/ab99", b"second") is True
    assert len(fsynced) == 2  # folder exists now: the temp file, then its folder
    fsynced.clear()
    assert store.put(KEY, b"again") is False
    assert fsynced == []
    store.flush()
    assert store.get(KEY) == b"durable"
    assert set(store.iterate()) == {f"{NS}/chunks/ab99", KEY}


def test_sync_filesystem_defers_to_one_syncfs(tmp_path, monkeypatch):
    store = FsChunkStore(tmp_path / "store")
    assert store.sync == "filesystem"
    fsynced, synced_fds = [], []
    monkeypatch.setattr(os, "fsync", lambda fd: fsynced.append(fd))
    real_syncfs = folders._syncfs()
    assert real_syncfs is not None  # glibc has it

    def fake_syncfs(fd):
        synced_fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_syncfs(fd)

    monkeypatch.setattr(folders, "_syncfs", lambda: fake_syncfs)
    for i in range(10):
        store.put(f"{NS}/chunks/{i:064x}", bytes([i]) * 100)
    assert fsynced == []
    store.flush()
    assert synced_fds == [str(tmp_path / "store")]


def test_put_durable_fsyncs_that_value_and_never_the_whole_file_system(tmp_path, monkeypatch):
    store = FsChunkStore(tmp_path / "store")  # sync="filesystem": put alone fsyncs nothing
    fsynced, syncfs_calls = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(folders, "_syncfs", lambda: lambda fd: syncfs_calls.append(fd) or 0)
    store.put(f"{NS}/chunks/ab00", b"made ahead")  # the fan folder exists before the durable put
    fsynced.clear()

    assert store.put_durable(KEY, b"a pack") is True
    path = store.root / NS / "chunks" / "ab" / CHUNK_ID
    assert fsynced[-1] == str(path.parent)  # the new name, after the value itself (a temp file then)
    assert len(fsynced) == 2 and fsynced[0].startswith(str(path))
    assert syncfs_calls == []
    assert store.get(KEY) == b"a pack"
    fsynced.clear()
    # an existing key: nothing written, but a barrier, since the put that made it may not be durable yet
    assert store.put_durable(KEY, b"another") is False
    assert fsynced == [] and len(syncfs_calls) == 1
    assert store.get(KEY) == b"a pack"


def test_flush_reports_syncfs_failure(tmp_path, monkeypatch):
    store = FsChunkStore(tmp_path)
    store.put(KEY, b"v")

    def failing_syncfs(fd):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(folders, "_syncfs", lambda: failing_syncfs)
    with pytest.raises(OSError) as caught:
        store.flush()
    assert caught.value.errno == errno.EIO


def test_sync_none_and_bad_sync_level(tmp_path):
    store = FsChunkStore(tmp_path, sync="none")
    assert store.put(KEY, b"v") is True
    store.flush()
    assert store.get(KEY) == b"v"
    with pytest.raises(ValueError):
        FsChunkStore(tmp_path, sync="always")  # type: ignore[arg-type]


def test_without_hard_links_first_writer_still_wins(tmp_path, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = FsChunkStore(tmp_path)
    assert store.put(KEY, b"first") is True
    assert store.put(KEY, b"second") is False
    assert store.get(KEY) == b"first"
    assert [p.name for p in store.path_for(KEY).parent.iterdir()] == [CHUNK_ID]  # no temp left


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    store = FsChunkStore(tmp_path)
    store.put(f"{NS}/chunks/ab00", b"makes the folder")

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StoreFullError):
        store.put(KEY, b"v")
    monkeypatch.undo()
    assert [p.name for p in store.path_for(KEY).parent.iterdir()] == ["ab00"]
    with pytest.raises(ChunkNotFoundError):
        store.get(KEY)


def test_root_is_created_lazily(tmp_path):
    root = tmp_path / "deep" / "root"
    store = FsChunkStore(root)
    assert not root.exists()
    assert list(store.iterate()) == []
    assert store.exists_many([KEY]) == set()
    store.delete(KEY)
    store.flush()
    assert not root.exists()
    store.put(KEY, b"v")
    assert root.is_dir()


def test_a_full_file_system_is_store_full_and_leaves_no_temp_file(tmp_path):
    """A real 1 MiB tmpfs: puts succeed until it is full, then StoreFullError (RESOURCE_EXHAUSTED, code 6762),
    never a bare OSError that a worker would retry; the failed put leaves no temp file and the values stored
    before stay whole."""
    from cbr_common.grpc_errors import status_code_for
    with small_file_system(tmp_path / "small", 1 << 20) as root:
        store = FsChunkStore(root)
        stored = {}
        with pytest.raises(StoreFullError) as caught:
            for i in range(64):
                key = f"{NS}/chunks/{i:064x}"
                store.put(key, os.urandom(64 * 1024))
                stored[key] = store.get(key)
        assert 4 <= len(stored) <= 16  # 1 MiB holds sixteen 64 KiB values at most
        assert caught.value.cbr_code == "BackupService.6762"
        assert status_code_for(caught.value).name == "RESOURCE_EXHAUSTED"
        assert "full" in str(caught.value)
        assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
        assert all(store.get(key) == value for key, value in stored.items())


def test_stale_temp_files_are_removed_under_a_prefix_only_when_old(tmp_path):
    store = FsChunkStore(tmp_path)
    other = f"9a1d0c3e-5f7b-4e2a-8c6d-1b0e9f8a7c65/chunks/{CHUNK_ID}"
    temps = {}
    for name, key in (("old", KEY), ("young", f"{NS}/chunks/cd{'1' * 62}"), ("other vault", other)):
        final = store.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temps[name] = final.with_name(f"{final.name}.tmp-{'0' * 32}")
        temps[name].write_bytes(b"cut off")
    old = time.time() - 7200
    for name in ("old", "other vault"):
        os.utime(temps[name], (old, old))

    assert store.remove_stale_temp_files(f"{NS}/") == 1
    assert not temps["old"].exists()
    assert temps["young"].exists()  # may be a put running right now, here or in another worker
    assert temps["other vault"].exists()  # another vault's GC takes care of it
    assert store.remove_stale_temp_files() == 1
    assert not temps["other vault"].exists() and temps["young"].exists()
    assert store.remove_stale_temp_files(older_than_s=0) == 1


def _cached_pages(path) -> int:
    """How many of the file's pages are in the page cache (mincore(2) over a mapping of it)."""
    import mmap
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                               ctypes.c_int, ctypes.c_int, ctypes.c_long]
    with open(path, "rb") as f:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        try:
            resident = (ctypes.c_ubyte * pages)()
            assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), resident) == 0
            return sum(b & 1 for b in resident)
        finally:
            libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))


def test_a_large_value_in_a_mapping_goes_around_the_page_cache(tmp_path):
    """A pack (a page-aligned mapping of 1 MiB or more) is written O_DIRECT up to its last whole page: the page
    cache holds at most its tail afterwards. A value in an ordinary buffer of the same size is cached as before."""
    import mmap
    size = 3 * (1 << 20) + 123  # a tail past the last whole page
    content = os.urandom(size)
    mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapped[:] = content
    store = FsChunkStore(tmp_path)
    assert store.put(f"{NS}/packs/aa", memoryview(mapped))
    assert store.put(f"{NS}/packs/bb", content)
    assert _cached_pages(store.path_for(f"{NS}/packs/aa")) <= 1  # the tail's page at most
    assert _cached_pages(store.path_for(f"{NS}/packs/bb")) == -(-size // mmap.PAGESIZE)
    assert store.get(f"{NS}/packs/aa") == content == store.get(f"{NS}/packs/bb")
    assert store._direct


def test_a_file_system_that_refuses_direct_writes_gets_buffered_ones(tmp_path, monkeypatch):
    import mmap
    from cbr_backup.chunkstore import fs

    def refuse(fd, on):
        if on:
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
    monkeypatch.setattr(fs, "_set_direct", refuse)
    size = 2 * (1 << 20) + 5
    mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapped[:] = content = os.urandom(size)
    store = FsChunkStore(tmp_path)
    assert store.put(f"{NS}/packs/aa", memoryview(mapped)) and store.get(f"{NS}/packs/aa") == content
    assert store._direct is False  # not tried again
    assert store.put(f"{NS}/packs/bb", memoryview(mapped)) and store.get(f"{NS}/packs/bb") == content
