"""File-system restore: a tree manifest becomes files, directories, links and metadata under a target root.

The restore never writes outside the target root, whatever the target already holds: it never resolves a
path string. Directories are opened one component at a time from the root's descriptor with O_NOFOLLOW |
O_DIRECTORY, so a symlink planted where a directory goes is refused, then removed and replaced. Files,
symlinks, FIFOs and hard links are made under a fresh temporary name (O_CREAT | O_EXCL | O_NOFOLLOW) and
renamed over the final name, which replaces a symlink or file there instead of writing through it (or
through a hard link into another tree). Every chunk is fetched and checked against its id before a byte of
it is written; a file whose chunk is missing or corrupt is never renamed into place. Rules: DESIGN.md
"File-system (tree) backups".
"""
from __future__ import annotations

import collections
import errno
import os
import shutil
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.pipeline import default_workers
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry, TreeManifest, check_component, split_path
from cbr_backup.domain.errors import InvalidTargetPathError
from cbr_backup.folders import sync_file_system
from cbr_common.errors import DataLossError

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PREFETCH_BYTES = 64 << 20     # decoded chunks fetched ahead of the writer (memory bound of a restore)
FETCH_BATCH_BYTES = 4 << 20   # chunks fetched together (one ranged read for those stored side by side)
PROGRESS_BYTES = 4 << 20
# Extended attributes the target cannot take (file system without them, a namespace reserved to root, a
# label the kernel refuses) are skipped: they are metadata, and the content must still be restored.
XATTR_SKIPPED = frozenset((errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.EINVAL))


@dataclass(frozen=True)
class TreeRestoreResult:
    files: int            # entries restored, of any kind (the root included)
    written_bytes: int    # file data written (holes are not written)
    seconds: float

    def summary(self) -> dict:
        return {"files": self.files, "written_bytes": self.written_bytes, "seconds": round(self.seconds, 3)}


class DirectoryCursor:
    """Opens directories below a root descriptor one component at a time, never following a symlink.

    Keeps the chain of the last directory opened, so a walk in tree order opens each directory once.
    check(path, stat) may refuse a directory (the backup refuses one that is not the directory its walk
    listed): the open then fails with NotADirectoryError.
    """

    def __init__(self, root_fd: int, check: Callable[[bytes, os.stat_result], bool] | None = None):
        self._root = root_fd
        self._check = check
        self._chain: list[tuple[bytes, int]] = []

    def open(self, path: bytes) -> int:
        """A descriptor of the directory at path (b"" is the root), valid until the next open or close."""
        names = path.split(b"/") if path else []
        keep = 0
        while keep < min(len(names), len(self._chain)) and self._chain[keep][0] == names[keep]:
            keep += 1
        while len(self._chain) > keep:
            os.close(self._chain.pop()[1])
        fd = self._chain[-1][1] if self._chain else self._root
        for depth in range(keep, len(names)):
            check_component(names[depth])
            child = os.open(names[depth], DIRECTORY_FLAGS, dir_fd=fd)
            if self._check is not None and not self._check(b"/".join(names[:depth + 1]), os.fstat(child)):
                os.close(child)
                raise NotADirectoryError(errno.ENOTDIR, "not the directory the walk listed", path)
            self._chain.append((names[depth], child))
            fd = child
        return fd

    def close(self) -> None:
        while self._chain:
            os.close(self._chain.pop()[1])


def restore_tree(manifest: TreeManifest, store, keys: VaultKeys, vault_id: str, target_root, *,
                 subpath: str = "", progress: Callable[[int, int], None] | None = None,
                 index=None) -> TreeRestoreResult:
    """Restores the tree into target_root/subpath.

    target_root is trusted (created if missing, resolved as given: a file system's root); subpath is not: its
    '/'-separated components are opened one by one below the root, created if missing, never through a
    symlink (InvalidTargetPathError), so a link planted in the file system cannot lead the restore elsewhere.
    What the target holds and the manifest does not name is left alone; what the manifest names replaces
    whatever is there. progress(done_bytes, total_bytes) may raise to stop the restore.
    index: where chunks live (the chunk index); without it, the vault's pack trailers say (DESIGN.md 13.3)."""
    t0 = time.perf_counter()
    os.makedirs(target_root, exist_ok=True)
    root_fd = _open_below(os.open(target_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), subpath)
    try:
        job = _TreeRestoreJob(manifest, store, keys, vault_id, root_fd, progress, index)
        job.run()
    finally:
        os.close(root_fd)
    return TreeRestoreResult(job.files, job.written_bytes, time.perf_counter() - t0)


def _open_below(root_fd: int, subpath: str) -> int:
    """Takes root_fd (closed here) down subpath's components; returns the last directory's descriptor."""
    fd = root_fd
    try:
        for part in (subpath.split("/") if subpath else []):
            name = part.encode()
            check_component(name)
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(name, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidTargetPathError(f"restore path component {part!r} is not a directory") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


class _TreeRestoreJob:
    def __init__(self, manifest: TreeManifest, store, keys: VaultKeys, vault_id: str, root_fd: int,
                 progress: Callable[[int, int], None] | None, index=None):
        self.manifest = manifest
        self.store = store
        self.vault_id = vault_id
        self.root_fd = root_fd
        self.progress = progress
        self.codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
        self.source = ChunkSource(store, self.codec, vault_id, index)
        self.source.prime(chunk for chunk, _ in self._chunk_refs())  # one batched lookup, not one per chunk
        self.is_root = os.geteuid() == 0
        self.files = 0
        self.written_bytes = 0
        self.done = 0
        self.reported = 0
        self.total = manifest.logical_bytes

    def run(self) -> None:
        directories = DirectoryCursor(self.root_fd)
        link_sources = DirectoryCursor(self.root_fd)
        chunks = _ChunkPrefetcher(self._chunk_refs(), self._fetch)
        try:
            self._report(force=True)
            for entry in self.manifest.entries[1:]:
                parent, name = split_path(entry.path)
                check_component(name)  # checked by the manifest already; kept true whatever handed it in
                dir_fd = directories.open(parent)
                if entry.kind == EntryKind.DIRECTORY:
                    _make_directory(dir_fd, name)
                elif entry.kind == EntryKind.FILE:
                    self._restore_file(dir_fd, name, entry, chunks)
                elif entry.kind == EntryKind.SYMLINK:
                    self._restore_symlink(dir_fd, name, entry)
                elif entry.kind == EntryKind.HARDLINK:
                    source_parent, source_name = split_path(entry.target)
                    check_component(source_name)
                    source_fd = link_sources.open(source_parent)
                    _replace(dir_fd, name, lambda temp: os.link(source_name, temp, src_dir_fd=source_fd,
                                                                dst_dir_fd=dir_fd, follow_symlinks=False))
                elif entry.kind == EntryKind.FIFO:
                    self._restore_fifo(dir_fd, name, entry)
                self.files += 1
            # Directories last, children before parents: making their contents changed their times, and a
            # read-only directory must still take its children first.
            for entry in reversed(self.manifest.entries):
                if entry.kind == EntryKind.DIRECTORY:
                    self._apply_metadata(directories.open(entry.path), entry)
            self.files += 1  # the root
            _sync_file_system(self.root_fd)
            self._report(force=True)
        finally:
            chunks.close()
            link_sources.close()
            directories.close()

    # Entries

    def _restore_file(self, dir_fd: int, name: bytes, entry: TreeEntry, chunks: "_ChunkPrefetcher") -> None:
        def write(temp: bytes) -> None:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
            try:
                os.ftruncate(fd, entry.size)  # holes stay holes: only data segments are written
                offset = 0
                for chunk, length in entry.segments:
                    if chunk is not None:
                        _write_all(fd, chunks.next(chunk), offset)  # decoded and checked before any write
                        self.written_bytes += length
                    offset += length
                    self.done += length
                    self._report()
                self._apply_metadata(fd, entry)
            finally:
                os.close(fd)

        _replace(dir_fd, name, write)
        self._report(force=True)

    def _restore_symlink(self, dir_fd: int, name: bytes, entry: TreeEntry) -> None:
        def make(temp: bytes) -> None:
            os.symlink(entry.target, temp, dir_fd=dir_fd)  # verbatim: where it points is data, never followed
            self._chown(lambda: os.chown(temp, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False))
            for key, value in entry.xattrs:
                _set_xattr(_proc_path(dir_fd, temp), key, value, follow_symlinks=False)
            os.utime(temp, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

        _replace(dir_fd, name, make)

    def _restore_fifo(self, dir_fd: int, name: bytes, entry: TreeEntry) -> None:
        def make(temp: bytes) -> None:
            os.mkfifo(temp, 0o600, dir_fd=dir_fd)
            fd = os.open(temp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    raise OSError(errno.EEXIST, "the FIFO was replaced while being restored", temp)
                self._apply_metadata(fd, entry)
            finally:
                os.close(fd)

        _replace(dir_fd, name, make)

    def _apply_metadata(self, fd: int, entry: TreeEntry) -> None:
        """Owner (which clears setuid bits), then mode, extended attributes, times: each undoes nothing
        of the ones before."""
        self._chown(lambda: os.fchown(fd, entry.uid, entry.gid))
        os.fchmod(fd, entry.mode)
        for key, value in entry.xattrs:
            _set_xattr(fd, key, value)
        os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))

    def _chown(self, call: Callable[[], None]) -> None:
        try:
            call()
        except PermissionError:
            if self.is_root:
                raise  # root may chown anything; failing here is a real error

    # Chunks

    def _chunk_refs(self) -> Iterator[tuple[bytes, int]]:
        for entry in self.manifest.entries:
            for chunk, length in entry.segments:
                if chunk is not None:
                    yield chunk, length

    def _fetch(self, refs: list[tuple[bytes, int]]) -> list:
        """Each (chunk, raw size)'s plaintext, or the DataLossError it raised (the writer raises it if it gets
        there: a restore stops at the first bad chunk it needs, not at a bad neighbour in the batch)."""
        values = self.source.fetch_many(chunk for chunk, _ in refs)
        out: list = []
        for chunk, raw_size in refs:
            try:
                out.append(self.source.decode(values, chunk, raw_size))
            except DataLossError as exc:
                out.append(exc)
        return out

    def _report(self, force: bool = False) -> None:
        if self.progress is not None and (force or self.done - self.reported >= PROGRESS_BYTES):
            self.reported = self.done
            self.progress(self.done, self.total)


class _ChunkPrefetcher:
    """Fetches and decodes the chunks of the restore, in the order the writer needs them, on a thread pool
    (store reads, decryption and zstd release the GIL), at most PREFETCH_BYTES ahead of the writer. Chunks go
    in batches of FETCH_BATCH_BYTES: small files' chunks, stored together, come in one ranged read."""

    def __init__(self, refs: Iterator[tuple[bytes, int]], fetch: Callable[[list[tuple[bytes, int]]], list]):
        self._refs = refs
        self._fetch = fetch
        self._queue: collections.deque[tuple[bytes, int, Future, int]] = collections.deque()
        self._queued_bytes = 0
        self._executor = ThreadPoolExecutor(2 * default_workers(), thread_name_prefix="cbr-tree-restore")

    def next(self, chunk: bytes) -> bytes:
        self._fill()
        queued, length, future, position = self._queue.popleft()
        self._queued_bytes -= length
        if queued != chunk:
            raise RuntimeError("chunks requested out of manifest order")
        self._fill()
        plain = future.result()[position]
        if isinstance(plain, Exception):
            raise plain  # this chunk's own failure: the chunks before it in its batch were fine
        return plain

    def _fill(self) -> None:
        while not self._queue or self._queued_bytes < PREFETCH_BYTES:
            batch: list[tuple[bytes, int]] = []
            size = 0
            while size < FETCH_BATCH_BYTES and (ref := next(self._refs, None)) is not None:
                batch.append(ref)
                size += ref[1]
            if not batch:
                return
            future = self._executor.submit(self._fetch, batch)
            self._queue.extend((chunk, length, future, i) for i, (chunk, length) in enumerate(batch))
            self._queued_bytes += size

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# File-system steps, all relative to a directory descriptor

def _make_directory(dir_fd: int, name: bytes) -> None:
    """A directory at name: an existing one is kept (with its contents); anything else there is removed,
    not followed. Created owner-only: its own mode comes last, after its contents."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        return
    except FileExistsError:
        pass
    if stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
        return
    os.unlink(name, dir_fd=dir_fd)
    os.mkdir(name, 0o700, dir_fd=dir_fd)


def _replace(dir_fd: int, name: bytes, make: Callable[[bytes], None]) -> None:
    """make(temp) creates the entry under a fresh name in dir_fd; it then replaces name (a symlink or file
    there is replaced, not written through; a directory there is removed). On failure the temp goes."""
    temp = b".cbr-restore-" + os.urandom(8).hex().encode()
    try:
        make(temp)
        try:
            if stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)  # fd-based, never follows a symlink inside
        except FileNotFoundError:
            pass
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path to name inside the open directory dir_fd, for calls that take no descriptor (lsetxattr): the
    kernel resolves /proc/self/fd/N to that very directory, and the last component is not followed."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _set_xattr(target, key: bytes, value: bytes, follow_symlinks: bool = True) -> None:
    try:
        if isinstance(target, int):
            os.setxattr(target, key, value)
        else:
            os.setxattr(target, key, value, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno not in XATTR_SKIPPED:
            raise


def _sync_file_system(fd: int) -> None:
    """One barrier for the whole restore (syncfs), instead of an fsync per file."""
    sync_file_system(fd, "the restore target")
