"""Making a folder's new entries durable: shared by the local provider and the file-system chunk store."""
from __future__ import annotations

import os


def fsync_folder(folder: str | os.PathLike) -> None:
    """fsync(2) of a folder, so that a file just created or renamed in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
