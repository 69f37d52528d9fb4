"""File-system backup and restore end to end on a memory store and index: exact trees, incremental reuse,
content-defined chunking, and a restore that never writes outside its target."""
import dataclasses
import errno
import hashlib
import os
import socket
import stat
import subprocess
import uuid

import pytest

from cbr_backup.adapters.chunk_index import MemoryChunkIndex
from cbr_backup.chunkstore import MemoryChunkStore
from cbr_backup.datapath import ChunkCorruptError, ChunkMissingError, ManifestCorruptError, VaultKeys, chunk_id
from cbr_backup.datapath import tree_backup
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.disk_backup import chunk_key, manifest_key
from cbr_backup.datapath.tree_backup import backup_tree, load_tree_manifest
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry, TreeManifest
from cbr_backup.datapath.tree_restore import restore_tree
from tests.support.packs import drop_chunk, packed_chunks

MIB = 1 << 20
OLD_NS = 1_600_000_000 * 10**9  # well in the past: never "changed too recently to trust"
IS_ROOT = os.geteuid() == 0


class Vault:
    def __init__(self, encrypted=False):
        self.id = str(uuid.uuid4())
        self.keys = VaultKeys(os.urandom(32), os.urandom(32) if encrypted else None)
        self.store = MemoryChunkStore()
        self.index = MemoryChunkIndex()

    def backup(self, root, **kw):
        return backup_tree(root, self.keys, self.store, self.index, self.id, **kw)

    def restore(self, manifest, target, **kw):
        return restore_tree(manifest, self.store, self.keys, self.id, target, **kw)

    def chunk_keys(self):
        return set(packed_chunks(self.store, self.keys, self.id))


# Trees

def write(path, data=b"", mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)


def text(size: int, seed: int = 0) -> bytes:
    line = b"".join(b"line %d of a file that compresses well, seed %d\n" % (i, seed) for i in range(2000))
    return (line * (size // len(line) + 1))[:size]


def try_xattr(path, name=b"user.cbr", value=b"kept") -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise


def age(root):
    """Distinct old times on every name, children before parents (times are part of what must round-trip)."""
    paths = sorted((os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files), reverse=True)
    for k, path in enumerate(paths + [str(root)]):
        os.utime(path, ns=(OLD_NS + 2 * k * 10**6, OLD_NS + k * 10**9 + 123), follow_symlinks=False)


def build_tree(root) -> bool:
    """Every kind of entry the tree path keeps; returns whether user xattrs are supported here."""
    write(root / "a/b/c/deep.txt", text(10_000))
    write(root / "empty_file")
    (root / "empty_dir").mkdir()
    write(root / "big.bin", os.urandom(3 * MIB) + text(3 * MIB + 12345, 1))
    with open(root / "sparse.img", "wb") as f:  # 8 MiB: data at 1 MiB and 5 MiB, holes around (and at the end)
        f.truncate(8 * MIB)
        f.seek(1 * MIB)
        f.write(os.urandom(64 << 10))
        f.seek(5 * MIB)
        f.write(text(4096))
    write(root / "setuid", b"#!/bin/sh\n", mode=0o4755)
    (root / "sticky").mkdir()
    write(root / "sticky/inside", b"x")
    os.chmod(root / "sticky", 0o1777)
    os.symlink("a/b/c/deep.txt", root / "rel")
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("../../../outside/of/everything", root / "a/b/outside")
    write(root / "a/hard1", text(5000, 2))
    os.link(root / "a/hard1", root / "a/b/hard2")
    os.link(root / "a/hard1", root / "hard3")
    os.mkfifo(root / "fifo", 0o640)
    write(root / "private", b"secret", mode=0o600)
    xattrs = try_xattr(root / "a/b/c/deep.txt") and try_xattr(root / "a", b"user.dir", b"\x00\xff")
    if IS_ROOT:
        os.chown(root / "a/b/c/deep.txt", 1234, 5678)
        os.chown(root / "rel", 4321, 8765, follow_symlinks=False)
        os.chown(root / "sticky", 42, 43)
        os.chown(root / "fifo", 7, 8)
    age(root)
    return xattrs


def tree_state(root) -> dict:
    """Everything the restore must reproduce, by relative path (reads with O_NOATIME so as to change nothing)."""
    state: dict[bytes, tuple] = {}
    first_name: dict[int, bytes] = {}

    def visit(dir_fd, prefix):
        for name in sorted(os.fsencode(n) for n in os.listdir(dir_fd)):
            path = prefix + name
            st = os.lstat(name, dir_fd=dir_fd)
            common = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME, dir_fd=dir_fd)
                try:
                    state[path] = common + (st.st_atime_ns, xattrs(fd))
                    visit(fd, path + b"/")
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME, dir_fd=dir_fd)
                try:
                    digest = hashlib.sha256(os.read(fd, st.st_size + 1)).hexdigest()
                    state[path] = common + (st.st_atime_ns, st.st_size, digest, xattrs(fd),
                                            first_name.setdefault(st.st_ino, path), st.st_nlink)
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(st.st_mode):
                state[path] = common + (os.readlink(name, dir_fd=dir_fd),)
            else:
                state[path] = common

    def xattrs(fd):
        return sorted((n, os.getxattr(fd, n)) for n in os.listxattr(fd))

    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
    try:
        st = os.fstat(root_fd)
        state[b""] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, xattrs(root_fd))
        visit(root_fd, b"")
    finally:
        os.close(root_fd)
    return state


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


# Round trips

@pytest.mark.parametrize("vault_kind", ["plain", "encrypted", "dictionary"])
def test_round_trip_is_exact(tmp_path, vault_kind):
    src, dst = tmp_path / "src", tmp_path / "dst"
    xattrs_supported = build_tree(src)
    before = tree_state(src)
    vault = Vault(encrypted=vault_kind == "encrypted")
    if vault_kind == "dictionary":
        VaultDictionaries(vault.store, vault.id, vault.keys).create(text(256 << 10, 9))

    result = vault.backup(src)
    assert tree_state(src) == before  # the backup changed nothing, atimes included
    manifest = load_tree_manifest(vault.store, vault.keys, vault.id, result.manifest_id)
    assert manifest == result.manifest
    first_names = {path: v for path, v in before.items() if path and v[0] == stat.S_IFREG and v[9] == path}
    assert result.logical_bytes == sum(v[6] for v in first_names.values())  # each inode once
    assert result.files == len(before)
    assert result.read_bytes < result.logical_bytes  # holes are not read
    assert result.new_chunks == len(vault.chunk_keys()) > 0
    restored = vault.restore(manifest, dst)

    assert tree_state(dst) == tree_state(src)
    assert restored.files == len(manifest.entries)
    assert restored.written_bytes == result.read_bytes
    # Holes stay holes: the same data extents, far fewer blocks than the size.
    fd = os.open(dst / "sparse.img", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 1 * MIB
        assert os.lseek(fd, 1 * MIB, os.SEEK_HOLE) <= 2 * MIB
    finally:
        os.close(fd)
    assert allocated(dst / "sparse.img") <= 256 << 10
    # Hard links share one inode; modes with setuid and sticky bits; the symlinks' targets verbatim.
    inodes = {os.stat(dst / p).st_ino for p in ("a/hard1", "a/b/hard2", "hard3")}
    assert len(inodes) == 1 and os.stat(dst / "hard3").st_nlink == 3
    assert stat.S_IMODE(os.stat(dst / "setuid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dst / "sticky").st_mode) == 0o1777
    assert os.readlink(dst / "a/b/outside") == "../../../outside/of/everything"
    assert os.readlink(dst / "abs") == "/etc/passwd"
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    if xattrs_supported:
        assert os.getxattr(dst / "a/b/c/deep.txt", "user.cbr") == b"kept"
        assert os.getxattr(dst / "a", "user.dir") == b"\x00\xff"
    if IS_ROOT:
        assert (os.stat(dst / "a/b/c/deep.txt").st_uid, os.stat(dst / "a/b/c/deep.txt").st_gid) == (1234, 5678)
        assert os.lstat(dst / "rel").st_uid == 4321
    assert not [n for n in os.listdir(dst) if n.startswith(".cbr-")]


def test_restore_over_an_existing_tree_replaces_what_differs(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    build_tree(src)
    vault = Vault()
    manifest = vault.backup(src).manifest
    vault.restore(manifest, dst)
    (dst / "big.bin").write_bytes(b"changed")
    os.unlink(dst / "rel")
    (dst / "rel").mkdir()  # a directory where a symlink goes
    write(dst / "rel/x", b"x")
    os.rmdir(dst / "empty_dir")
    (dst / "empty_dir").write_bytes(b"a file where a directory goes")
    write(dst / "extra", b"not in the backup")
    vault.restore(manifest, dst)
    state = tree_state(dst)
    assert state.pop(b"extra")[:2] == (stat.S_IFREG, 0o644)  # left alone
    expected = tree_state(src)
    state[b""], expected[b""] = state[b""][:3], expected[b""][:3]  # "extra" changed the root's mtime
    assert state == expected


# Incremental backups

def test_unchanged_tree_is_not_read_again(tmp_path):
    build_tree(tmp_path / "src")
    vault = Vault()
    first = vault.backup(tmp_path / "src")
    second = vault.backup(tmp_path / "src", parent=first.manifest)
    assert second.read_bytes == 0
    assert second.new_chunks == 0
    assert without_symlink_atimes(second.manifest) == without_symlink_atimes(first.manifest)
    assert second.logical_bytes == first.logical_bytes


def without_symlink_atimes(manifest):
    # readlink(2) itself sets a symlink's atime, so the first walk moved them; nothing else may differ.
    return [dataclasses.replace(e, atime_ns=0) if e.kind == EntryKind.SYMLINK else e for e in manifest.entries]


def test_insert_in_a_big_file_stores_few_chunks(tmp_path):
    src = tmp_path / "src"
    data = os.urandom(16 * MIB)
    write(src / "big", data)
    write(src / "small", b"small and unchanged")
    age(src)
    vault = Vault()
    first = vault.backup(src)
    chunks_before = len(first.manifest.chunk_ids())
    assert 6 <= chunks_before <= 40  # FastCDC at 1 MiB on average

    changed = data[:7 * MIB + 12345] + b"inserted bytes" * 100 + data[7 * MIB + 12345:]
    write(src / "big", changed)
    os.utime(src / "big", ns=(OLD_NS, OLD_NS + 10**9))
    second = vault.backup(src, parent=first.manifest)
    assert second.read_bytes == len(changed)  # the small file was not read
    assert 1 <= second.new_chunks <= 3
    assert len(first.manifest.chunk_ids() & second.manifest.chunk_ids()) >= chunks_before - 3
    vault.restore(second.manifest, tmp_path / "dst")
    assert tree_state(tmp_path / "dst") == tree_state(src)


def test_unconfirmed_parent_chunks_mean_reading_again(tmp_path):
    src = tmp_path / "src"
    write(src / "one", text(100_000, 1))
    write(src / "two", text(200_000, 2))
    age(src)
    vault = Vault()
    first = vault.backup(src)
    lost = next(e for e in first.manifest.entries if e.path == b"two").segments[0][0]
    del vault.index.rows[(vault.id, lost)]  # GC swept its row: the index no longer vouches for it
    second = vault.backup(src, parent=first.manifest)
    assert second.read_bytes == 200_000
    assert (vault.id, lost) in vault.index.rows  # stored again (the store's copy verified) and indexed
    assert second.manifest == first.manifest


def test_a_file_touched_within_its_timestamp_tick_is_never_trusted(tmp_path):
    src = tmp_path / "src"
    write(src / "fresh", b"written just now")
    vault = Vault()
    first = vault.backup(src)
    assert next(e for e in first.manifest.entries if e.path == b"fresh").ctime_ns == 0
    second = vault.backup(src, parent=first.manifest)
    assert second.read_bytes == len(b"written just now")


def test_files_changing_while_read_are_read_twice_then_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tree_backup, "READ_SIZE", 1 * MIB)
    src = tmp_path / "src"
    write(src / "growing", os.urandom(3 * MIB))
    age(src)

    def progress(done, total):
        if 0 < done < total:
            with open(src / "growing", "ab") as f:
                f.write(b"more")

    vault = Vault()
    result = vault.backup(src, progress=progress)
    entry = next(e for e in result.manifest.entries if e.path == b"growing")
    assert result.read_bytes >= 6 * MIB  # read twice
    assert 3 * MIB < entry.size < os.path.getsize(src / "growing")  # what the second read saw
    vault.restore(result.manifest, tmp_path / "dst")
    assert (tmp_path / "dst/growing").read_bytes() == (src / "growing").read_bytes()[:entry.size]
    again = vault.backup(src, parent=result.manifest)  # its times moved on: read again, not trusted
    assert again.read_bytes == os.path.getsize(src / "growing")


def test_names_vanishing_after_the_walk_are_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(tree_backup, "READ_SIZE", 1 * MIB)
    src = tmp_path / "src"
    write(src / "a_big", os.urandom(3 * MIB))
    write(src / "z1", b"two names")
    os.link(src / "z1", src / "z2")
    write(src / "z_gone", b"deleted during the backup")
    age(src)

    def progress(done, total):
        if 0 < done < 3 * MIB and (src / "z1").exists():
            os.unlink(src / "z1")
            os.unlink(src / "z_gone")

    result = Vault().backup(src, progress=progress)
    entries = {e.path: e for e in result.manifest.entries}
    assert b"z1" not in entries and b"z_gone" not in entries
    assert entries[b"z2"].kind == EntryKind.FILE and entries[b"z2"].size == len(b"two names")


# Progress and cancellation

def test_progress_reaches_the_total(tmp_path):
    build_tree(tmp_path / "src")
    vault = Vault()
    calls = []
    result = vault.backup(tmp_path / "src", progress=lambda done, total: calls.append((done, total)))
    regular_files = sum(1 for e in result.manifest.entries if e.kind == EntryKind.FILE)
    assert len(calls) >= regular_files
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (result.logical_bytes, result.logical_bytes)
    calls.clear()
    vault.restore(result.manifest, tmp_path / "dst", progress=lambda done, total: calls.append((done, total)))
    assert len(calls) >= regular_files and calls[-1] == (result.logical_bytes, result.logical_bytes)


class Cancelled(Exception):
    pass


def test_progress_raising_stops_the_backup(tmp_path):
    build_tree(tmp_path / "src")
    vault = Vault()
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        vault.backup(tmp_path / "src", progress=progress, manifest_id="m1")
    assert len(calls) == 3
    assert not list(vault.store.iterate(f"{vault.id}/manifests/"))


def test_progress_raising_stops_the_restore(tmp_path):
    build_tree(tmp_path / "src")
    vault = Vault()
    manifest = vault.backup(tmp_path / "src").manifest

    def progress(done, total):
        if done:
            raise Cancelled

    with pytest.raises(Cancelled):
        vault.restore(manifest, tmp_path / "dst", progress=progress)
    assert not (tmp_path / "dst/sparse.img").exists()  # the last file in order was never reached


# Store and index

def test_write_order(tmp_path):
    """Chunks put, flush, their rows; then the manifest put, flush (DESIGN.md "Write order")."""
    build_tree(tmp_path / "src")
    vault = Vault()
    log = []
    store, index = vault.store, vault.index

    class Store:
        def __getattr__(self, name):
            return getattr(store, name)

        def put(self, key, data):
            log.append(("put", key.split("/")[1]))
            return store.put(key, data)

        def flush(self):
            log.append(("flush",))

    class Index:
        def __getattr__(self, name):
            return getattr(index, name)

        def record_new(self, vault_id, rows):
            log.append(("record", len(list(rows))))
            return index.record_new(vault_id, rows)

    result = backup_tree(tmp_path / "src", vault.keys, Store(), Index(), vault.id)
    last_chunk = max(i for i, e in enumerate(log) if e == ("put", "packs"))
    record = log.index(("record", result.new_chunks))
    assert last_chunk < record - 1 and log[record - 1] == ("flush",)
    assert log[record + 1:] == [("put", "manifests"), ("flush",)]
    with pytest.raises(FileExistsError):  # a manifest is never replaced
        backup_tree(tmp_path / "src", vault.keys, vault.store, vault.index, vault.id,
                    manifest_id=result.manifest_id)


def test_a_lone_leftover_in_the_store_does_not_matter(tmp_path):
    src = tmp_path / "src"
    write(src / "f", text(50_000))
    vault = Vault()
    chunk = chunk_id(text(50_000), vault.keys.id_key)  # small enough to be one chunk
    vault.store.put(chunk_key(vault.id, chunk), b"torn")  # a torn lone chunk from before packs, not indexed
    result = vault.backup(src)
    assert result.new_chunks == 1
    vault.restore(result.manifest, tmp_path / "dst")
    assert (tmp_path / "dst/f").read_bytes() == text(50_000)


def test_missing_chunk_stops_the_restore_and_writes_nothing_wrong(tmp_path):
    src = tmp_path / "src"
    write(src / "a_first", text(20_000, 1))
    write(src / "b_lost", text(30_000, 2))
    write(src / "c_after", text(40_000, 3))
    vault = Vault()
    manifest = vault.backup(src).manifest
    lost = next(e for e in manifest.entries if e.path == b"b_lost").segments[0][0]
    drop_chunk(vault.store, vault.keys, vault.id, lost, vault.index)
    dst = tmp_path / "dst"
    with pytest.raises(ChunkMissingError):
        vault.restore(manifest, dst)
    assert sorted(os.listdir(dst)) == ["a_first"]  # no partial file, no temp file
    assert (dst / "a_first").read_bytes() == text(20_000, 1)

    vault.store.put(chunk_key(vault.id, lost), b"\x01garbage")
    with pytest.raises(ChunkCorruptError):
        vault.restore(manifest, tmp_path / "dst2")
    assert sorted(os.listdir(tmp_path / "dst2")) == ["a_first"]


def test_a_missing_manifest_is_reported(tmp_path):
    vault = Vault()
    with pytest.raises(ManifestCorruptError):
        load_tree_manifest(vault.store, vault.keys, vault.id, "nope")
    vault.store.put(manifest_key(vault.id, "bad"), b"\x00not a manifest")
    with pytest.raises(ManifestCorruptError):
        load_tree_manifest(vault.store, vault.keys, vault.id, "bad")


# Restore safety

def snapshot_outside(outside) -> dict:
    return {p: (p.read_bytes() if p.is_file() else None, p.lstat().st_mtime_ns)
            for p in sorted(outside.rglob("*"))} | {outside: os.lstat(outside).st_mtime_ns}


def test_restore_never_writes_outside_its_target(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "dir/f", b"into dir")
    write(src / "file.txt", b"into file.txt")
    write(src / "hard.txt", b"into hard.txt")
    write(src / "nested/x/y", b"into nested/x/y")
    write(src / "fifo_spot", b"into fifo_spot")
    vault = Vault()
    manifest = vault.backup(src).manifest

    write(outside / "victim.txt", b"untouched")
    write(outside / "victim2.txt", b"untouched too")
    write(outside / "dir/f", b"must not be overwritten")
    dst.mkdir()
    os.symlink(outside / "dir", dst / "dir")                # a directory symlink where a directory goes
    os.symlink(outside / "victim.txt", dst / "file.txt")    # a file symlink where a file goes
    os.link(outside / "victim2.txt", dst / "hard.txt")      # a hard link into another tree
    (dst / "nested").mkdir()
    os.symlink(outside, dst / "nested/x")                   # deeper down
    os.mkfifo(dst / "fifo_spot")                            # a FIFO would block a naive open
    before = snapshot_outside(outside)

    vault.restore(manifest, dst)
    assert snapshot_outside(outside) == before
    assert tree_state(dst) == tree_state(src) | {b"": tree_state(dst)[b""]}
    for name in ("dir", "nested/x"):
        assert stat.S_ISDIR(os.lstat(dst / name).st_mode)


def test_a_directory_swapped_for_a_symlink_during_the_restore_is_refused(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "a/sub/f", b"f")
    write(src / "z_last", b"last")
    age(src)
    vault = Vault()
    manifest = vault.backup(src).manifest
    (outside / "sub").mkdir(parents=True, mode=0o700)
    before = snapshot_outside(outside) | {"mode": os.stat(outside / "sub").st_mode}

    def progress(done, total):  # after the last file, before directories get their metadata
        if done == total and not (dst / "a_moved").exists():
            os.rename(dst / "a", dst / "a_moved")
            os.symlink(outside, dst / "a")

    with pytest.raises(NotADirectoryError):  # the directory is opened without following the symlink
        vault.restore(manifest, dst, progress=progress)
    assert snapshot_outside(outside) | {"mode": os.stat(outside / "sub").st_mode} == before


def test_a_directory_swapped_for_a_symlink_during_the_backup_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(tree_backup, "READ_SIZE", 1 * MIB)
    src, outside = tmp_path / "src", tmp_path / "outside"
    write(src / "a_big", os.urandom(2 * MIB))
    write(src / "b/secret", b"the file the walk listed")
    write(outside / "secret", b"a file outside the tree")

    def progress(done, total):  # the walk is over; reading has begun
        if 0 < done and not (src / "b_moved").exists():
            os.rename(src / "b", src / "b_moved")
            os.symlink(outside, src / "b")

    result = Vault().backup(src, progress=progress)
    assert [e.path for e in result.manifest.entries] == [b"", b"a_big", b"b"]  # b/secret vanished
    assert result.read_bytes == 2 * MIB


@pytest.mark.parametrize("evil", [
    (TreeEntry(b"..", EntryKind.DIRECTORY), TreeEntry(b"../escaped", EntryKind.FILE, ctime_ns=1)),
    (TreeEntry(b"..", EntryKind.FILE, ctime_ns=1),),
    (TreeEntry(b"x/../..", EntryKind.SYMLINK, target=b"/"),),
], ids=["through a parent", "as a name", "deeper"])
def test_restore_refuses_a_manifest_that_escapes_even_unchecked(tmp_path, evil):
    vault = Vault()
    write(tmp_path / "bystander", b"next to the target")
    manifest = TreeManifest((TreeEntry(b"", EntryKind.DIRECTORY, mode=0o755),))
    object.__setattr__(manifest, "entries", manifest.entries + evil)  # however it was made, names are checked
    with pytest.raises(ManifestCorruptError):
        vault.restore(manifest, tmp_path / "target")
    assert sorted(os.listdir(tmp_path)) == ["bystander", "target"]
    assert os.listdir(tmp_path / "target") == []


# Walk

def test_symlinked_and_special_entries_are_not_followed(tmp_path):
    src = tmp_path / "src"
    write(tmp_path / "elsewhere/secret", b"not in the backup")
    src.mkdir()
    os.symlink(tmp_path / "elsewhere", src / "link_to_dir")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(src / "sock"))
        result = Vault().backup(src)
    finally:
        sock.close()
    assert [(e.path, e.kind) for e in result.manifest.entries] == [
        (b"", EntryKind.DIRECTORY), (b"link_to_dir", EntryKind.SYMLINK)]  # sockets are left out
    assert result.read_bytes == 0


@pytest.mark.skipif(not IS_ROOT, reason="mounting needs root")
def test_another_file_system_is_an_empty_directory(tmp_path):
    src = tmp_path / "src"
    write(src / "mnt/hidden", b"under the mount")
    write(src / "kept", b"kept")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(src / "mnt")],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        write(src / "mnt/on_tmpfs", b"another file system")
        result = Vault().backup(src)
    finally:
        subprocess.run(["umount", "-l", str(src / "mnt")], check=True)
    paths = [e.path for e in result.manifest.entries]
    assert paths == [b"", b"kept", b"mnt"]
    assert result.manifest.entries[2].kind == EntryKind.DIRECTORY


def test_small_files_restore_in_few_ranged_reads(tmp_path):
    """Small files' chunks sit side by side in a pack; the restore fetches them in batches (DESIGN.md 13.3)."""
    src = tmp_path / "src"
    for i in range(200):
        write(src / f"d{i % 4}" / f"f{i:03}", text(3000, i))
    vault = Vault(encrypted=True)
    result = vault.backup(src)
    reads = []

    class Counting:
        def __getattr__(self, name):
            return getattr(vault.store, name)

        def read_ranges(self, key, ranges):
            reads.append(len(ranges))
            return vault.store.read_ranges(key, ranges)

    restore_tree(result.manifest, Counting(), vault.keys, vault.id, tmp_path / "dst", index=vault.index)
    assert tree_state(tmp_path / "dst") == tree_state(src)
    assert result.new_chunks == 200 and len(reads) <= 4  # not one read per chunk
