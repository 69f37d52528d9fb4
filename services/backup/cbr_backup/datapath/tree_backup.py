"""File-system backup: a directory tree becomes content-defined chunks in the vault's store and one tree manifest.

Two passes. The walk lists the tree (lstat, symlink targets, extended attributes) through directory
descriptors, never following a symlink and never entering another file system, so the total is known before
any byte is read. Then regular files are read in tree order: holes are skipped (SEEK_DATA / SEEK_HOLE), data
is cut by the C engine's FastCDC (an insert moves only the chunks around it), hashed with the vault's keyed
BLAKE3, and new chunks are compressed, encrypted and put on a thread pool. With a parent manifest, a file
whose size, mtime, ctime and inode are unchanged reuses the parent's chunk list unread, once the index has
confirmed (and touched) those chunks.

Write order as for disks (DESIGN.md "Write order", 12.2): chunks appended to packs; every COMMIT_EVERY chunks of
packs put and at the end (the last pack closed) store.flush(), then their index rows; the manifest put (an
existing one is an error), store.flush().
"""
from __future__ import annotations

import datetime as dt
import errno
import os
import stat
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath import packs as packfiles
from cbr_backup.datapath.disk_backup import COMMIT_EVERY, TOUCH_MARGIN, manifest_key
from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.datapath.extents import data_extents
from cbr_backup.datapath.pipeline import default_workers
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry, TreeManifest, split_path
from cbr_backup.datapath.tree_restore import DIRECTORY_FLAGS, DirectoryCursor
from cbr_backup.engine import CdcChunker

# FastCDC sizes (DESIGN.md section 11): 1 MiB on average, as restic, so a file costs 8x fewer store objects
# than at the disk path's 128 KiB while an edit still costs only the one or two chunks around it.
CDC_MIN_SIZE = 256 << 10
CDC_AVG_SIZE = 1 << 20
CDC_MAX_SIZE = 4 << 20
READ_SIZE = 4 << 20           # one read (and at least one progress call) per this many bytes
LOOKUP_BATCH = 256            # unknown chunk ids per index lookup: small files share a round trip
LOOKUP_BYTES = 16 << 20       # ... or this much of their data waiting
TOUCH_BATCH = 4096            # parent chunk ids confirmed per index call
# A file whose mtime is this close to the moment it was read may change again within the same timestamp
# tick (ext4: a few ms; FAT: 2 s) without its metadata showing it: its ctime is recorded as 0, so the next
# backup reads it again instead of trusting it.
RACY_WINDOW_NS = 2_000_000_000
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO swapped in never blocks
_VANISHED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_XATTR_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP)
_XATTR_SKIPPED = _XATTR_UNSUPPORTED + (errno.ENODATA, errno.ENOENT, errno.EPERM, errno.EACCES)


@dataclass(frozen=True)
class TreeBackupResult:
    manifest_id: str
    manifest: TreeManifest
    logical_bytes: int       # sum of regular file sizes (apparent size)
    read_bytes: int          # bytes actually read (unchanged files are not re-read)
    files: int               # entries of any kind
    new_chunks: int
    stored_bytes_added: int  # new chunks + manifest
    seconds: float

    def summary(self) -> dict:
        return {"manifest_id": self.manifest_id, "logical_bytes": self.logical_bytes,
                "read_bytes": self.read_bytes, "files": self.files, "new_chunks": self.new_chunks,
                "stored_bytes_added": self.stored_bytes_added, "seconds": round(self.seconds, 3)}


def load_tree_manifest(store, keys: VaultKeys, vault_id: str, manifest_id: str) -> TreeManifest:
    key = manifest_key(vault_id, manifest_id)
    try:
        value = store.get(key)
    except ChunkNotFoundError:
        raise ManifestCorruptError(f"manifest {key} is missing") from None
    return TreeManifest.decode(ChunkCodec(keys).unseal(value, key.encode(), key))


def backup_tree(root, keys: VaultKeys, store, index, vault_id: str, *, parent: TreeManifest | None = None,
                manifest_id: str | None = None, started_time: dt.datetime | None = None,
                progress: Callable[[int, int], None] | None = None) -> TreeBackupResult:
    """Backs up the directory tree at root (root itself is resolved as given; nothing below it is followed).

    parent: the previous backup's manifest of this tree; unchanged files reuse its chunks unread.
    started_time: when the backup started by the index's clock (GC's cutoff uses it); default index.now().
    progress(done_bytes, total_bytes): called at least once per file and per READ_SIZE; raising stops the
    backup (nothing refers to what it stored; GC reclaims it).
    """
    t0 = time.perf_counter()
    manifest_id = manifest_id or str(uuid.uuid4())
    root_fd = _open_noatime(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        job = _TreeBackupJob(keys, store, index, vault_id, started_time, progress)  # since: before the walk
        manifest = job.run(root_fd, _walk(root_fd), parent)
    finally:
        os.close(root_fd)
    return job.finish(manifest_id, manifest, t0)


# The walk

@dataclass(frozen=True, slots=True)
class _Found:
    path: bytes
    kind: EntryKind          # DIRECTORY, FILE (a hard link is decided when reading), SYMLINK or FIFO
    st: os.stat_result
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    target: bytes = b""


def _walk(root_fd: int) -> list[_Found]:
    """Every name below root in tree order (depth first, names sorted as bytes), parents first.

    Directories on another file system (mount points) are listed as empty directories and not entered;
    other names on another device (a bind-mounted file), sockets and device nodes are left out. A name that
    vanishes or changes kind while being looked at is left out too (it was being deleted)."""
    root_st = os.fstat(root_fd)
    device = root_st.st_dev
    found = [_Found(b"", EntryKind.DIRECTORY, root_st, _xattrs(root_fd))]
    stack: list[tuple[bytes, int, list[bytes]]] = [(b"", root_fd, _names(root_fd))]
    try:
        while stack:
            prefix, dir_fd, names = stack[-1]
            if not names:
                stack.pop()
                if dir_fd != root_fd:
                    os.close(dir_fd)
                continue
            name = names.pop()
            path = prefix + name
            try:
                st = os.lstat(name, dir_fd=dir_fd)
                if stat.S_ISDIR(st.st_mode):
                    if st.st_dev != device:
                        found.append(_Found(path, EntryKind.DIRECTORY, st))
                        continue
                    child = _open_noatime(name, DIRECTORY_FLAGS, dir_fd=dir_fd)
                    child_st = os.fstat(child)
                    if child_st.st_dev != device:  # mounted between the lstat and the open
                        os.close(child)
                        found.append(_Found(path, EntryKind.DIRECTORY, child_st))
                        continue
                    try:
                        found.append(_Found(path, EntryKind.DIRECTORY, child_st, _xattrs(child)))
                        names_below = _names(child)
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((path + b"/", child, names_below))
                elif stat.S_ISREG(st.st_mode):
                    if st.st_dev == device:
                        found.append(_Found(path, EntryKind.FILE, st, _xattrs_at(dir_fd, name)))
                elif stat.S_ISLNK(st.st_mode):
                    target = _readlink(name, dir_fd)
                    if target is not None:
                        found.append(_Found(path, EntryKind.SYMLINK, st, _xattrs_at(dir_fd, name), target))
                elif stat.S_ISFIFO(st.st_mode):
                    found.append(_Found(path, EntryKind.FIFO, st, _xattrs_at(dir_fd, name)))
            except OSError as exc:
                if exc.errno not in _VANISHED:
                    raise
    finally:
        for _, dir_fd, _ in stack:
            if dir_fd != root_fd:
                os.close(dir_fd)
    return found


def _names(dir_fd: int) -> list[bytes]:
    """The directory's names as bytes, in reverse order (the walk pops them)."""
    return sorted((os.fsencode(name) for name in os.listdir(dir_fd)), reverse=True)


def _readlink(name: bytes, dir_fd: int) -> bytes | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # no longer a symlink: replaced since the lstat
            return None
        raise


def _xattrs(fd: int) -> tuple[tuple[bytes, bytes], ...]:
    return _read_xattrs(fd, {})


def _xattrs_at(dir_fd: int, name: bytes) -> tuple[tuple[bytes, bytes], ...]:
    # No descriptor for a symlink or FIFO, and no *xattrat: the /proc/self/fd path names that very
    # directory, and follow_symlinks=False leaves the last component unfollowed.
    return _read_xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name), {"follow_symlinks": False})


def _read_xattrs(target, options: dict) -> tuple[tuple[bytes, bytes], ...]:
    try:
        names = os.listxattr(target, **options)
    except OSError as exc:
        if exc.errno in _XATTR_SKIPPED:
            return ()
        raise
    pairs = []
    for name in sorted(names, key=os.fsencode):
        try:
            pairs.append((os.fsencode(name), os.getxattr(target, name, **options)))
        except OSError as exc:
            if exc.errno not in _XATTR_SKIPPED:  # ENODATA: removed since the listing
                raise
    return tuple(pairs)


def _metadata(st: os.stat_result) -> dict:
    return dict(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, atime_ns=st.st_atime_ns,
                mtime_ns=st.st_mtime_ns)


# Reading and storing

class _TreeBackupJob:
    def __init__(self, keys: VaultKeys, store, index, vault_id: str, started_time: dt.datetime | None,
                 progress: Callable[[int, int], None] | None):
        self.store = store
        self.index = index
        self.vault_id = vault_id
        self.progress = progress
        self.since = (started_time or index.now()) - TOUCH_MARGIN
        dictionaries = VaultDictionaries(store, vault_id, keys)
        self.codec = ChunkCodec(keys, dictionary=dictionaries.current(), dictionaries=dictionaries.by_tag)
        self.packs = packfiles.PackWriter(store, self.codec, vault_id)
        # Ids the index confirmed: the parent's (kept), lookup hits (a cache, cleared at COMMIT_EVERY);
        # claimed: ids this backup stores, until their rows are indexed. Only the calling thread uses these.
        self.parent_known: frozenset[bytes] = frozenset()
        self.known: set[bytes] = set()
        self.claimed: set[bytes] = set()
        self.pending: dict[bytes, bytes] = {}   # unknown ids waiting for one batched lookup, with their data
        self.pending_bytes = 0
        self.in_flight: set[Future] = set()
        self.workers = default_workers()
        self.executor: ThreadPoolExecutor | None = None
        self.buffer = bytearray(READ_SIZE)
        self.chunker = CdcChunker(CDC_MIN_SIZE, CDC_AVG_SIZE, CDC_MAX_SIZE)
        self.lock = threading.Lock()  # guards what the workers update
        self.new_chunks = 0
        self.stored_added = 0
        self.read_bytes = 0
        self.done = 0
        self.total = 0
        self.reported = 0
        self.device = 0

    def run(self, root_fd: int, walked: list[_Found], parent: TreeManifest | None) -> TreeManifest:
        self.device = walked[0].st.st_dev
        inodes = {(f.st.st_dev, f.st.st_ino): f.st.st_size for f in walked if f.kind == EntryKind.FILE}
        self.total = sum(inodes.values())  # a file with several names is read once
        directories = {f.path: (f.st.st_dev, f.st.st_ino) for f in walked if f.kind == EntryKind.DIRECTORY}
        cursor = DirectoryCursor(root_fd, lambda path, st: directories.get(path) == (st.st_dev, st.st_ino))
        unchanged = self._unchanged_files(walked, parent)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cbr-tree-backup")
        try:
            self._report(force=True)
            entries = self._entries(walked, unchanged, cursor)
            self._resolve_pending()
            while self.in_flight:
                self._settle(block=True)
        finally:
            cursor.close()
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.total = self.done  # files that vanished or changed size since the walk
        self._report(force=True)
        return TreeManifest(entries)

    def _unchanged_files(self, walked: list[_Found], parent: TreeManifest | None) -> dict[bytes, TreeEntry]:
        """path -> the parent's entry, for files the parent has with the same size, mtime, ctime and inode
        whose chunks the index still holds (confirmed and touched, so GC keeps them)."""
        if parent is None:
            return {}
        files = {e.path: e for e in parent.entries if e.kind == EntryKind.FILE}
        by_path = dict(files)
        by_path.update((e.path, files[e.target]) for e in parent.entries if e.kind == EntryKind.HARDLINK)
        candidates = {}
        for f in walked:
            old = by_path.get(f.path) if f.kind == EntryKind.FILE else None
            if old is not None and old.ctime_ns and (old.size, old.mtime_ns, old.ctime_ns, old.inode) == (
                    f.st.st_size, f.st.st_mtime_ns, f.st.st_ctime_ns, f.st.st_ino):
                candidates[f.path] = old
        ids = sorted({chunk for old in candidates.values() for chunk, _ in old.segments if chunk is not None})
        confirmed: set[bytes] = set()
        for start in range(0, len(ids), TOUCH_BATCH):
            confirmed |= self.index.touch_existing(self.vault_id, ids[start:start + TOUCH_BATCH], self.since)
        self.parent_known = frozenset(confirmed)
        return {path: old for path, old in candidates.items()
                if all(chunk is None or chunk in confirmed for chunk, _ in old.segments)}

    def _entries(self, walked: list[_Found], unchanged: dict[bytes, TreeEntry],
                 cursor: DirectoryCursor) -> list[TreeEntry]:
        entries = []
        # (dev, inode) -> the path of the FILE entry holding that inode, for files with several names.
        link_owner: dict[tuple[int, int], bytes] = {}
        for f in walked:
            if f.kind != EntryKind.FILE:
                fields = _metadata(f.st)
                entries.append(TreeEntry(f.path, f.kind, xattrs=f.xattrs, target=f.target, **fields))
                continue
            inode = (f.st.st_dev, f.st.st_ino) if f.st.st_nlink > 1 else None
            if inode in link_owner:
                entries.append(TreeEntry(f.path, EntryKind.HARDLINK, target=link_owner[inode]))
                continue
            old = unchanged.get(f.path)
            if old is not None:
                entry = TreeEntry(f.path, EntryKind.FILE, xattrs=f.xattrs, size=old.size, ctime_ns=old.ctime_ns,
                                  inode=old.inode, segments=old.segments, **_metadata(f.st))
                self.done += old.size
            else:
                entry = self._read_file(f, cursor)
                if entry is None:
                    continue  # vanished: a later name of its inode, if any, is read in its place
            if inode is not None and entry.inode == f.st.st_ino:
                link_owner[inode] = f.path
            entries.append(entry)
            self._report(force=True)
        return entries

    def _read_file(self, found: _Found, cursor: DirectoryCursor) -> TreeEntry | None:
        """Reads the file at found.path; None if it vanished or is no longer a regular file here.

        A file that changes while read (size, mtime or ctime differ after) is read once more; if it changes
        again, what the second read saw is kept, with the metadata from before that read, so the next backup
        sees it changed and reads it again."""
        parent, name = split_path(found.path)
        try:
            fd = _open_noatime(name, _FILE_FLAGS, dir_fd=cursor.open(parent))
        except OSError as exc:
            if exc.errno in _VANISHED:
                return None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_dev != self.device:
                return None
            for attempt in range(2):
                segments = self._read_content(fd, st.st_size)
                after = os.fstat(fd)
                if _same_version(st, after) or attempt == 1:
                    break
                st = after
                self.total += st.st_size  # more to read than the walk counted: progress stays monotonic
            xattrs = found.xattrs if st.st_ino == found.st.st_ino else _xattrs(fd)
        finally:
            os.close(fd)
        ctime_ns = st.st_ctime_ns
        if st.st_mtime_ns >= time.time_ns() - RACY_WINDOW_NS:
            ctime_ns = 0  # could change again unseen within its timestamp tick: never trusted as unchanged
        size = sum(length for _, length in segments)
        return TreeEntry(found.path, EntryKind.FILE, xattrs=xattrs, size=size, ctime_ns=ctime_ns,
                         inode=st.st_ino, segments=tuple(segments), **_metadata(st))

    def _read_content(self, fd: int, size: int) -> list[tuple[bytes | None, int]]:
        """Segments of the file's first size bytes: holes unread, each data extent cut by FastCDC. Stops
        early where the file turns out shorter (the caller sees it changed)."""
        segments: list[tuple[bytes | None, int]] = []
        position = 0
        for start, end in data_extents(fd, size):
            if start > position:
                segments.append((None, start - position))
                self.done += start - position
            got = self._read_extent(fd, start, end, segments)
            position = start + got
            if got < end - start:
                return segments
        if position < size:
            segments.append((None, size - position))
            self.done += size - position
        return segments

    def _read_extent(self, fd: int, start: int, end: int, segments: list) -> int:
        chunker, buffer = self.chunker, memoryview(self.buffer)
        offset = start
        try:
            while offset < end:
                wanted = min(READ_SIZE, end - offset)
                got = _read_at(fd, buffer[:wanted], offset)
                self.read_bytes += got
                for piece in chunker.feed(buffer[:got]):
                    self._add_chunk(piece, segments)
                offset += got
                self.done += got
                self._report()
                if got < wanted:
                    break
        finally:
            tail = chunker.finish()  # also resets the chunker for the next extent
        for piece in tail:
            self._add_chunk(piece, segments)
        return offset - start

    def _add_chunk(self, data: memoryview, segments: list) -> None:
        chunk = self.codec.chunk_id(data)
        segments.append((chunk, len(data)))
        if chunk in self.parent_known or chunk in self.known or chunk in self.claimed or chunk in self.pending:
            return
        self.pending[chunk] = bytes(data)  # the read buffer is reused
        self.pending_bytes += len(data)
        if len(self.pending) >= LOOKUP_BATCH or self.pending_bytes >= LOOKUP_BYTES:
            self._resolve_pending()

    def _resolve_pending(self) -> None:
        """One index lookup for the waiting ids; what it does not find is stored."""
        if not self.pending:
            return
        found = self.index.touch_existing(self.vault_id, list(self.pending), self.since)
        if len(self.known) >= COMMIT_EVERY:
            self.known.clear()  # only a cache: the index answers again
        self.known.update(found)
        pending, self.pending, self.pending_bytes = self.pending, {}, 0
        for chunk, data in pending.items():
            if chunk in found:
                continue
            self.claimed.add(chunk)
            while len(self.in_flight) >= 2 * self.workers:
                self._settle(block=True)
            self.in_flight.add(self.executor.submit(self._store, chunk, data))
        self._settle(block=False)

    def _settle(self, block: bool) -> None:
        """Drops finished puts (raising the first failure) and commits a full batch."""
        if block:
            done, self.in_flight = wait(self.in_flight, return_when=FIRST_COMPLETED)
        else:
            done = {f for f in self.in_flight if f.done()}
            self.in_flight -= done
        for future in done:
            future.result()
        rows = self.packs.take_rows(at_least=COMMIT_EVERY)
        if rows:
            self._commit(rows)

    def _store(self, chunk: bytes, data: bytes) -> None:
        """On a worker: compress, encrypt, append to the open pack (its row is handed out once the pack is put)."""
        value = self.codec.encode(data, chunk)
        if self.packs.add(chunk, len(data), value):
            with self.lock:
                self.new_chunks += 1

    def _commit(self, rows: list[packfiles.Row]) -> None:
        """Write order steps 2 and 3 for one batch: its packs become durable, then their rows are indexed."""
        if not rows:
            return
        self.store.flush()
        self.index.record_new(self.vault_id, rows)
        self.claimed.difference_update(row[0] for row in rows)  # the index answers for them now

    def _report(self, force: bool = False) -> None:
        if self.progress is not None and (force or self.done - self.reported >= READ_SIZE):
            self.reported = self.done
            self.total = max(self.total, self.done)  # files that grew since the walk
            self.progress(self.done, self.total)

    def finish(self, manifest_id: str, manifest: TreeManifest, t0: float) -> TreeBackupResult:
        self.packs.close()  # the last pack is put and durable; only then are its chunks indexed
        self._commit(self.packs.take_rows())
        key = manifest_key(self.vault_id, manifest_id)
        value = self.codec.seal(manifest.encode(), key.encode())
        if not self.store.put(key, value):  # the manifest, then its own barrier
            raise FileExistsError(f"manifest {key} exists already")
        self.store.flush()
        return TreeBackupResult(
            manifest_id=manifest_id, manifest=manifest, logical_bytes=manifest.logical_bytes,
            read_bytes=self.read_bytes, files=len(manifest.entries), new_chunks=self.new_chunks,
            stored_bytes_added=self.stored_added + self.packs.bytes_written + len(value),
            seconds=time.perf_counter() - t0)


def _open_noatime(path, flags: int, dir_fd: int | None = None) -> int:
    """O_NOATIME where allowed (the owner or root): reading files and listing directories then leaves their
    atime as the manifest records it."""
    try:
        return os.open(path, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        return os.open(path, flags, dir_fd=dir_fd)


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Fills view from offset; fewer bytes only at the end of the file."""
    filled = 0
    while filled < len(view):
        got = os.preadv(fd, [view[filled:]], offset + filled)
        if got == 0:
            break
        filled += got
    return filled


def _same_version(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns)
