"""FsChunkStore: one file per key under a root folder, written temp-then-link, with PBS-style sync levels.

Layout: `<root>/<seg>/.../<fan>/<last>` where the segments before the last become folders and `<fan>` is the
first two characters of the last segment (`a_` for a one-character one), so "v1/chunks/ab12..." lives at
`<root>/v1/chunks/ab/ab12...`. Fan folders are the only two-character folders: a non-last segment of one or
two characters is stored as a folder padded with "~" to three ("ab" -> "ab~"), and "~" never occurs in a key.
Without that, keys of different depths could need one path as a file and as a folder at once.

A put writes `<final>.tmp-<hex>` (O_EXCL) in the final folder, then hard-links it to the final name and
removes the temp name: link(2) fails if the name exists, so the first writer wins atomically, across threads
and processes, and a reader never sees a half-written value. Temp names contain a ".", which no key does, so
get and iterate never return one; `remove_stale_temp_files` cleans those a crash left behind (the worker calls
it when it starts, GC for its vault). A file system out of room (ENOSPC, EDQUOT) raises StoreFullError; the
put's temp file is removed first.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from cbr_backup.chunkstore.base import (
    FULL_ERRNOS,
    MAX_KEY_SEGMENTS,
    STALE_TEMP_AGE_S,
    ChunkNotFoundError,
    check_key,
    check_prefix,
    check_value,
    is_valid_key,
    store_full,
)
from cbr_backup.folders import fsync_folder, sync_file_system

SyncLevel = Literal["file", "filesystem", "none"]
SYNC_LEVELS: tuple[str, ...] = ("file", "filesystem", "none")

_TEMP_MARK = ".tmp-"
_DIR_MODE = 0o700
_FILE_MODE = 0o600
DIRECT_MIN = 1 << 20  # values at least this large are written with O_DIRECT (_write)
DIRECT_ALIGN = 4096
# link(2) errors meaning "this file system has no hard links", not "something is wrong".
_NO_HARDLINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _page_aligned(view: memoryview) -> bool:
    """Whether a writable buffer starts on a page (O_DIRECT's rule); a read-only one is never taken for it."""
    if view.readonly:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % DIRECT_ALIGN == 0


def fan_name(last: str) -> str:
    """The fan-out folder of a key's last segment."""
    return last[:2] if len(last) >= 2 else last + "_"


def _segment_dir(segment: str) -> str:
    return segment.ljust(3, "~") if len(segment) < 3 else segment


def _segment_from_dir(name: str) -> str | None:
    """The key segment a (non-fan) folder stands for, or None for a stray folder."""
    segment = name.rstrip("~") if len(name) == 3 else name
    if len(name) < 3 or (name != segment and len(segment) > 2) or not is_valid_key(segment):
        return None
    return segment


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:  # pread may return less than asked (signals, some file systems)
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


class FsChunkStore:
    """Chunk store on a local (or any POSIX) file system.

    sync="file": fsync each temp file before linking it and its folder after, so a put that returns True is
    durable when it returns. sync="filesystem" (default, as in PBS): no per-file fsync; flush() calls syncfs(2)
    on the root's file system, one barrier per backup instead of one fsync per chunk. sync="none": no syncing
    at all, for throwaway data. In "file" mode flush() calls syncfs too: a put that returned False may have
    lost a race to a put whose folder fsync is still running, and the barrier covers that one.
    """

    def __init__(self, root: Path | str, sync: SyncLevel = "filesystem"):
        if sync not in SYNC_LEVELS:
            raise ValueError(f"sync must be one of {', '.join(SYNC_LEVELS)}, not {sync!r}")
        self.root = Path(root).absolute()  # a relative root would break once the cwd changes
        self.sync: SyncLevel = sync
        self._root = os.fspath(self.root)
        self._hardlinks = True
        self._publish_lock = threading.Lock()  # used only where hard links are missing
        self._direct = hasattr(os, "O_DIRECT")  # large values written around the page cache (_write)

    def path_for(self, key: str) -> Path:
        """Where the value of key lives (whether or not it exists)."""
        return Path(self._path(check_key(key)))

    def _path(self, key: str) -> str:
        *dirs, last = key.split("/")
        return os.path.join(self._root, *map(_segment_dir, dirs), fan_name(last), last)

    def put(self, key: str, data: bytes) -> bool:
        return self._checked_put(key, data, self.sync == "file")

    def put_durable(self, key: str, data: bytes) -> bool:
        if self.sync == "none":
            return self.put(key, data)
        if os.path.exists(self._path(check_key(key))):
            self.flush()  # it may be another put's, not yet durable
            return False
        return self._checked_put(key, data, True)

    def _checked_put(self, key: str, data: bytes, durable: bool) -> bool:
        check_key(key)
        check_value(data)
        try:
            return self._put(self._path(key), data, durable)
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise store_full(os.strerror(exc.errno)) from exc
            raise

    def _put(self, final: str, data: bytes, durable: bool) -> bool:
        """durable: the file fsynced before it is linked, its folder after."""
        if os.path.exists(final):  # the common dedup hit: no temp file, no write
            return False
        folder = os.path.dirname(final)
        temp = f"{final}{_TEMP_MARK}{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, _FILE_MODE)
        except FileNotFoundError:
            self._make_dirs(folder)
            fd = os.open(temp, flags, _FILE_MODE)
        try:
            try:
                self._write(fd, memoryview(data).cast("B"))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            created = self._publish(temp, final)
        finally:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
        if created and durable:
            fsync_folder(folder)  # makes the new name (and the temp's removal) durable
        return created

    def _write(self, fd: int, view: memoryview) -> None:
        """Writes the whole value. A large one in a page-aligned buffer (a pack's mapping) goes around the page
        cache (O_DIRECT) up to its last whole page: copying packs into the cache cost ~1 CPU-second per GiB
        stored, for pages nobody reads soon (DESIGN.md 10.3). The tail, or all of a value in another buffer or
        on a file system that refuses O_DIRECT, is written buffered; syncfs/fsync make both durable alike."""
        done = 0
        if self._direct and len(view) >= DIRECT_MIN and _page_aligned(view):
            aligned = len(view) - len(view) % DIRECT_ALIGN
            try:
                _set_direct(fd, True)
                while done < aligned:
                    done += os.write(fd, view[done:aligned])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct = False  # this file system refuses direct writes: buffered from here on
            finally:
                _set_direct(fd, False)
        view = view[done:]
        while view:
            view = view[os.write(fd, view):]

    def _publish(self, temp: str, final: str) -> bool:
        """Gives temp's contents the final name unless it exists; True if this call did."""
        if self._hardlinks:
            try:
                os.link(temp, final)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_HARDLINK_ERRNOS:
                    raise
                self._hardlinks = False
        # No hard links here: rename would replace an existing value, so check first under a lock. That keeps
        # first-writer-wins within this process; across processes two writers of one key may race, which only
        # matters for values that differ (chunks under a content hash never do).
        with self._publish_lock:
            if os.path.exists(final):
                return False
            os.rename(temp, final)
            return True

    def _make_dirs(self, folder: str) -> None:
        missing = []
        while not os.path.isdir(folder):
            missing.append(folder)
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
        for path in reversed(missing):
            try:
                os.mkdir(path, _DIR_MODE)
            except FileExistsError:
                pass  # a concurrent put made it; still fsync below, we may return before that put does
            if self.sync == "file":
                fsync_folder(os.path.dirname(path))

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            with open(self._path(key), "rb", buffering=0) as file:
                return file.readall()
        except FileNotFoundError:
            raise ChunkNotFoundError(key) from None

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        check_key(key)
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ChunkNotFoundError(key) from None
        try:
            size = os.fstat(fd).st_size
            out = []
            for offset, length in ranges:
                start = max(0, size + offset) if offset < 0 else offset
                out.append(_pread_all(fd, min(length, max(0, size - start)), start))
            return out
        finally:
            os.close(fd)

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        wanted = {check_key(key) for key in keys}
        return {key for key in wanted if os.path.exists(self._path(key))}

    def delete(self, key: str) -> None:
        # Not fsynced in any mode: a delete lost in a crash only brings back an unreferenced value.
        # Empty folders stay, so a concurrent put never finds its folder removed under it.
        check_key(key)
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def iterate(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)  # here, not in the generator, so a bad prefix fails at the call
        return self._iterate(prefix)

    def _iterate(self, prefix: str) -> Iterator[str]:
        *whole, partial = prefix.split("/")
        start = os.path.join(self._root, *map(_segment_dir, whole))
        for segments, entry in self._walk(start, whole, partial):
            if is_valid_key(entry.name) and entry.name.startswith(partial if len(segments) == len(whole) else ""):
                yield "/".join([*segments, entry.name])

    def _walk(self, folder: str, segments: list[str], partial: str) -> Iterator[tuple[list[str], os.DirEntry]]:
        """Files in fan folders below folder, with the key segments they sit under. partial filters the
        first level (the level of the prefix's last, incomplete segment)."""
        try:
            scan = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        with scan:
            for entry in scan:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                name = entry.name
                if len(name) == 2:
                    if partial and not (name == partial[:2] if len(partial) >= 2 else name.startswith(partial)):
                        continue
                    yield from self._fan_files(entry.path, segments)
                elif len(segments) < MAX_KEY_SEGMENTS - 1:
                    segment = _segment_from_dir(name)
                    if segment is not None and segment.startswith(partial):
                        yield from self._walk(entry.path, [*segments, segment], "")

    @staticmethod
    def _fan_files(folder: str, segments: list[str]) -> Iterator[tuple[list[str], os.DirEntry]]:
        try:
            scan = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        with scan:
            for entry in scan:
                if entry.is_file(follow_symlinks=False):
                    yield segments, entry

    def flush(self) -> None:
        if self.sync == "none":
            return
        try:
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # nothing was ever put
        try:
            sync_file_system(fd, str(self._root))
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:  # write-back found no room (a thin or quota-bound volume)
                raise store_full(os.strerror(exc.errno)) from exc
            raise
        finally:
            os.close(fd)

    def remove_stale_temp_files(self, prefix: str = "", older_than_s: float = STALE_TEMP_AGE_S) -> int:
        """Deletes temp files that puts cut off by a crash left behind under prefix, if their last write is
        older than older_than_s (a running put writes its temp file within milliseconds and removes it at
        once, so an hour-old one belongs to no put still alive, in this process or another)."""
        check_prefix(prefix)
        *whole, partial = prefix.split("/")
        cutoff = time.time() - older_than_s
        removed = 0
        start = os.path.join(self._root, *map(_segment_dir, whole))
        for segments, entry in self._walk(start, whole, partial):
            if _TEMP_MARK not in entry.name or (len(segments) == len(whole) and not entry.name.startswith(partial)):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
