"""`cbr backup mount`: a backup as a read-only FUSE file system, read on demand through the backup service's read
calls (the client never holds a vault key; every chunk is checked by the service).

A disk backup shows as one image file, `disk.img` (a server backup: one `<device>.img` per disk), to be loop-mounted
(`mount -o loop,ro DIR/disk.img MNT`); a file-system backup as its tree. Reads go through a small cache of aligned
windows, each fetched with one streaming call (holes arrive as lengths, not zeros); a read in the second half of a
window starts fetching the next one on a side thread, so a sequential reader rarely waits. libfuse runs the callbacks on
its own threads, so the calls use a synchronous gRPC channel of their own.
"""
from __future__ import annotations

import collections
import concurrent.futures
import errno
import os
import stat
import sys
import threading
import time
from pathlib import Path

import grpc

from cbr.backup.v1 import backup_pb2, backup_pb2_grpc
from cbr_cli.config import Config

WINDOW = 4 << 20          # bytes fetched per call and cached together
DEFAULT_CACHE_MIB = 32    # windows kept
ERRNO_BY_STATUS = {grpc.StatusCode.NOT_FOUND: errno.ENOENT, grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
                   grpc.StatusCode.UNAUTHENTICATED: errno.EACCES, grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def sync_channel(config: Config) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    address = config.address("backup")
    if not config.tls_ca:
        return grpc.insecure_channel(address, options=options)
    key = Path(config.tls_key).read_bytes() if config.tls_key else None
    chain = Path(config.tls_cert).read_bytes() if config.tls_cert else None
    credentials = grpc.ssl_channel_credentials(Path(config.tls_ca).read_bytes(), key, chain)
    return grpc.secure_channel(address, credentials, options=options)


class Backups:
    """The read calls, synchronous, with the caller's token and the configured deadline (a window is small: a
    call that takes longer is a service in trouble, and the reader gets EIO rather than a hang)."""

    def __init__(self, config: Config):
        self.channel = sync_channel(config)
        self.stub = backup_pb2_grpc.BackupServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
        self.timeout = config.timeout

    def get(self, backup_id: str) -> backup_pb2.Backup:
        return self.stub.GetBackup(backup_pb2.GetBackupRequest(backup_id=backup_id), metadata=self.metadata,
                                   timeout=self.timeout).backup

    def listing(self, backup_id: str, path: bytes) -> list[backup_pb2.TreeNode]:
        replies = self.stub.ListBackupTree(backup_pb2.ListBackupTreeRequest(backup_id=backup_id, path=path),
                                           metadata=self.metadata, timeout=self.timeout)
        return [node for reply in replies for node in reply.entries]

    def image(self, backup_id: str, offset: int, length: int):
        return self.stub.GetBackupImageRange(backup_pb2.GetBackupImageRangeRequest(
            backup_id=backup_id, offset=offset, length=length, holes=True), metadata=self.metadata,
            timeout=self.timeout)

    def file(self, backup_id: str, path: bytes, offset: int, length: int):
        return self.stub.GetBackupFile(backup_pb2.GetBackupFileRequest(
            backup_id=backup_id, path=path, offset=offset, length=length, holes=True), metadata=self.metadata,
            timeout=self.timeout)


def assemble(stream, offset: int, length: int) -> tuple[bytes, int]:
    """The bytes [offset, offset + length) a read stream covers, holes as zeros; and the size it reports."""
    out, size = bytearray(length), 0
    for piece in stream:
        size = piece.size
        if piece.data:
            at = piece.offset - offset
            out[at:at + len(piece.data)] = piece.data
    return bytes(out), size


class WindowCache:
    """The last windows read, by (file key, window number); one fetch per window even when threads race for it."""

    def __init__(self, windows: int):
        self.windows = max(1, windows)
        self._data: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict = {}
        self._ahead = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="cbr-read-ahead")

    def prefetch(self, key, fetch) -> None:
        """Starts fetching a window on a side thread unless it is cached or on its way (a sequential reader's
        next window arrives while it reads this one); a failure is left for the reader to meet itself."""
        with self._lock:
            if key in self._data or key in self._pending:
                return
        self._ahead.submit(self._quiet_get, key, fetch)

    def _quiet_get(self, key, fetch) -> None:
        try:
            self.get(key, fetch)
        except Exception:  # noqa: BLE001 - not cached: the reader fetches it again and reports what fails
            pass

    def get(self, key, fetch) -> bytes:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            event = self._pending.get(key)
            mine = event is None
            if mine:
                event = self._pending[key] = threading.Event()
        if not mine:
            event.wait()
            with self._lock:
                if key in self._data:
                    return self._data[key]
            return self.get(key, fetch)  # the fetch that ran failed: this caller tries (and meets the error) itself
        try:
            data = fetch()
            with self._lock:
                self._data[key] = data
                while len(self._data) > self.windows:
                    self._data.popitem(last=False)
            return data
        finally:
            with self._lock:
                del self._pending[key]
            event.set()


def read_through(cache: WindowCache, key, size: int, offset: int, length: int, fetch_window) -> bytes:
    """length bytes at offset of a file of size (less at its end), from its cached windows."""
    end = min(size, offset + length)
    out = bytearray()

    def fetcher(window: int):
        return lambda: fetch_window(window * WINDOW, min(WINDOW, size - window * WINDOW))

    while offset < end:
        window = offset // WINDOW
        data = cache.get((key, window), fetcher(window))
        start = offset - window * WINDOW
        take = data[start:start + end - offset]
        out += take
        offset += len(take)
    if end > 0 and (end - 1) % WINDOW >= WINDOW // 2 and (end - 1) // WINDOW + 1 < -(-size // WINDOW):
        cache.prefetch((key, (end - 1) // WINDOW + 1), fetcher((end - 1) // WINDOW + 1))  # read ahead
    return bytes(out)


def _errno_of(error: grpc.RpcError) -> int:
    return ERRNO_BY_STATUS.get(error.code(), errno.EIO)


def _operations_base():
    import mfusepy  # libfuse loads here: `cbr` works without it for everything but mount
    return mfusepy


def make_file_system(backups: Backups, backup: backup_pb2.Backup, cache_windows: int, on_ready, on_error):
    """The FUSE operations object for the backup (its kind decides which)."""
    fuse = _operations_base()

    class Common(fuse.Operations):
        use_ns = True

        def __init__(self):
            self.cache = WindowCache(cache_windows)
            self.started = time.time_ns()
            self.reported: set = set()

        def init(self, path):
            on_ready()

        def open(self, path, flags):
            if flags & WRITE_FLAGS:
                raise fuse.FuseOSError(errno.EROFS)
            self._node(path)  # ENOENT for a name that is not there
            return 0

        def statfs(self, path):
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

        def _failed(self, error: grpc.RpcError):
            code = error.code()
            if code not in self.reported and code not in ERRNO_BY_STATUS:
                # Once per kind of failure (a loop mount retries a bad block often); a name that is not there is
                # the caller's business, not an error of the mount.
                self.reported.add(code)
                on_error(error)
            raise fuse.FuseOSError(_errno_of(error)) from None

        def _dir_stat(self, mode=0o555):
            return {"st_mode": stat.S_IFDIR | mode, "st_nlink": 2, "st_size": 0, "st_uid": os.getuid(),
                    "st_gid": os.getgid(), "st_mtime": self.started, "st_atime": self.started,
                    "st_ctime": self.started}

    class ImageFiles(Common):
        """One read-only image file per disk: disk.img, or <device>.img for each disk of a server backup."""

        def __init__(self):
            super().__init__()
            # Built before mounting: a backup that cannot be read fails the command with the service's status.
            self.images: dict[str, tuple[str, int, int]] = {}  # name -> (backup id, size, data bytes)
            parts = [backups.get(child.backup_id) for child in backup.children] or [backup]
            for part in parts:
                name = "disk.img" if part is backup else f"{(part.device or part.backup_id).replace('/', '_')}.img"
                _, size = assemble(backups.image(part.backup_id, 0, 1), 0, 1)  # every message tells the size
                self.images[name] = (part.backup_id, size, part.logical_bytes)

        def _node(self, path):
            name = path.lstrip("/")
            if name not in self.images:
                raise fuse.FuseOSError(errno.ENOENT)
            return self.images[name]

        def getattr(self, path, fh=None):
            if path == "/":
                return self._dir_stat()
            _, size, data = self._node(path)
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size, "st_uid": os.getuid(),
                    "st_gid": os.getgid(), "st_blocks": (data + 511) // 512,  # holes take no room: a sparse file
                    "st_mtime": self.started, "st_atime": self.started, "st_ctime": self.started}

        def readdir(self, path, fh):
            return [".", "..", *self.images]

        def read(self, path, size, offset, fh):
            backup_id, image_size, _ = self._node(path)
            try:
                return read_through(self.cache, backup_id, image_size, offset, size,
                                    lambda at, length: assemble(backups.image(backup_id, at, length), at, length)[0])
            except grpc.RpcError as error:
                self._failed(error)

    class TreeFiles(Common):
        """The backed-up tree, read-only; each directory listed once, when first looked at."""

        def __init__(self):
            super().__init__()
            self.listings: dict[bytes, dict[bytes, backup_pb2.TreeNode]] = {}
            self.lock = threading.Lock()
            self._listing(b"", mounted=False)  # a backup that cannot be read fails the command before mounting

        def _listing(self, path: bytes, mounted: bool = True) -> dict[bytes, backup_pb2.TreeNode]:
            with self.lock:
                found = self.listings.get(path)
            if found is not None:
                return found
            if path and self._lookup(path).type != backup_pb2.TREE_NODE_TYPE_DIRECTORY:
                raise fuse.FuseOSError(errno.ENOTDIR)  # a file lists as itself: never take that for its contents
            try:
                found = {node.name: node for node in backups.listing(backup.backup_id, path)}
            except grpc.RpcError as error:
                if not mounted:
                    raise
                self._failed(error)
            with self.lock:
                self.listings[path] = found
            return found

        def _lookup(self, raw: bytes) -> backup_pb2.TreeNode:
            parent, _, name = raw.rpartition(b"/")
            node = self._listing(parent).get(name)
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
            return node

        def _node(self, path: str) -> backup_pb2.TreeNode | None:
            raw = path.encode("utf-8", "surrogateescape").strip(b"/")  # mfusepy decodes names this way
            return self._lookup(raw) if raw else None

        def getattr(self, path, fh=None):
            node = self._node(path)
            if node is None:
                return self._dir_stat()
            kind = {backup_pb2.TREE_NODE_TYPE_DIRECTORY: stat.S_IFDIR, backup_pb2.TREE_NODE_TYPE_FILE: stat.S_IFREG,
                    backup_pb2.TREE_NODE_TYPE_SYMLINK: stat.S_IFLNK,
                    backup_pb2.TREE_NODE_TYPE_FIFO: stat.S_IFIFO}[node.type]
            size = len(node.link_target) if kind == stat.S_IFLNK else node.size
            return {"st_mode": kind | (node.mode & 0o7555), "st_nlink": 2 if kind == stat.S_IFDIR else 1,
                    "st_size": size, "st_uid": node.uid, "st_gid": node.gid, "st_mtime": node.mtime_ns,
                    "st_atime": node.mtime_ns, "st_ctime": node.mtime_ns, "st_blocks": (size + 511) // 512}

        def readdir(self, path, fh):
            raw = path.encode("utf-8", "surrogateescape").strip(b"/")
            names = [name.decode("utf-8", "surrogateescape") for name in self._listing(raw)]
            return [".", "..", *names]

        def readlink(self, path):
            return self._node(path).link_target.decode("utf-8", "surrogateescape")

        def read(self, path, size, offset, fh):
            node = self._node(path)
            raw = path.encode("utf-8", "surrogateescape").strip(b"/")
            try:
                return read_through(self.cache, raw, node.size, offset, size,
                                    lambda at, length: assemble(backups.file(backup.backup_id, raw, at, length),
                                                                at, length)[0])
            except grpc.RpcError as error:
                self._failed(error)

    from cbr.common.v1 import common_pb2
    return TreeFiles() if backup.resource_type == common_pb2.OBJECT_TYPE_TURBO else ImageFiles()


def mount(file_system, directory: str, backup_id: str) -> None:
    """Serves file_system at directory until it is unmounted or the process gets SIGINT or SIGTERM (libfuse's own
    handlers end the loop and unmount)."""
    fuse = _operations_base()
    fuse.FUSE(file_system, directory, foreground=True, ro=True, fsname=f"cbr:{backup_id}", subtype="cbr",
              kernel_cache=True, attr_timeout=3600, entry_timeout=3600)


def report(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
