"""A consistent snapshot of a disk file: a reflink clone where the file system has them, else a copy of the
data extents only (holes stay holes), so that a backup reads one instant of a disk that keeps changing.

A clone (FICLONE) is atomic: the snapshot is the disk at the moment of the ioctl. A copy takes time, so it is
one instant only if nobody writes the disk while it runs; pass `quiesce`, a context manager that holds the
disk's writers off (a provider's write lock, fsfreeze, a guest agent's freeze) for the duration. Either way
the backup then reads the snapshot, not the disk, and the disk may be written again at once.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from typing import ContextManager

from cbr_backup.datapath.blockio import ALIGN, BufferPool, open_disk, read_at, write_at
from cbr_backup.datapath.extents import data_extents

FICLONE = 0x40049409
_NO_CLONE_ERRNOS = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
_COPY_BUFFER = 8 << 20


@dataclass(frozen=True)
class Snapshot:
    """path: the snapshot file; reflinked: True if it is a clone sharing extents with the disk (then a later
    clone's FIEMAP tells which blocks changed in between), False if it is a copy."""
    path: str
    size: int
    reflinked: bool

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def take_snapshot(source: str | os.PathLike, target: str | os.PathLike,
                  quiesce: ContextManager | None = None, allow_clone: bool = True) -> Snapshot:
    """Snapshots the disk file source into target (which must not exist)."""
    source, target = os.fspath(source), os.fspath(target)
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with quiesce if quiesce is not None else contextlib.nullcontext():
                if allow_clone and _clone(src, dst):
                    return Snapshot(target, os.fstat(dst).st_size, True)
                size = os.fstat(src).st_size
                _copy_extents(source, src, dst, size)
            return Snapshot(target, size, False)
        except BaseException:
            os.close(dst)
            dst = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise
        finally:
            if dst >= 0:
                os.close(dst)
    finally:
        os.close(src)


def _clone(src: int, dst: int) -> bool:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError as exc:
        if exc.errno in _NO_CLONE_ERRNOS:
            return False
        raise


def _copy_extents(source_path: str, src: int, dst: int, size: int) -> None:
    """Copies the data extents of src into dst (sized to size, so the gaps stay holes)."""
    os.ftruncate(dst, size)
    extents = data_extents(src, size)
    if not extents:
        return
    reader = open_disk(source_path, os.O_RDONLY)
    writer = open_disk(f"/proc/self/fd/{dst}", os.O_WRONLY)
    pool = BufferPool(1, _COPY_BUFFER)
    buffer = pool.take()
    try:
        for start, end in extents:
            # Extents are file-system-block aligned except at the end of the file; round the start down so
            # direct I/O stays aligned (the bytes before it are data or zeros, the same in both files).
            offset = start - start % ALIGN
            while offset < end:
                length = min(_COPY_BUFFER, end - offset)
                n = read_at(reader, buffer.view, offset, length)
                if n == 0:
                    break
                padded = -(-n // ALIGN) * ALIGN if writer.direct else n
                if padded > n:
                    buffer.view[n:padded] = bytes(padded - n)
                write_at(writer, buffer.view[:padded], offset)
                offset += n
        os.ftruncate(writer.fd, size)  # a padded last write may have run past the end
    finally:
        pool.give_back(buffer)
        pool.close()
        reader.close()
        writer.close()
