"""Making writes durable: a folder's new entries (fsync of the folder) or a whole file system (syncfs), shared by
the local provider, the file-system chunk store and the tree restore."""
from __future__ import annotations

import ctypes
import errno
import functools
import os


def fsync_folder(folder: str | os.PathLike) -> None:
    """fsync(2) of a folder, so that a file just created or renamed in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _syncfs():
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def sync_file_system(fd: int, what: str) -> None:
    """syncfs(2) of the file system holding fd: one barrier for many files; sync(2) where there is none."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
    elif syncfs(fd) != 0:
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, f"syncfs({what}): {os.strerror(err)}")
        os.sync()
