"""What the backup service needs from a provider of disks and file systems (the parts used so far)."""
from __future__ import annotations

from typing import Protocol


class UnsafePathError(RuntimeError):
    """A provider path is not what it must be (e.g. a symlink where a folder belongs); nothing was touched."""


class RestorePoint(Protocol):
    """A disk's contents at one moment, kept while an in-place restore writes the disk, so that a failed restore
    puts the disk back as it was (DESIGN.md 7.1). It survives the worker: a retry of the same restore finds it."""

    async def roll_back(self) -> None:
        """Makes the disk what it was when the point was taken, all at once or not at all; spends the point."""

    async def release(self) -> None:
        """Drops the point once the restore completed; no error if it is gone already."""


class Provider(Protocol):
    """Disks and file systems of a project, addressed by validated UUIDs only.

    Writes are durable when a call returns, so the service can commit its row right after; deletes are
    idempotent, so a retry after a crash between row and file finishes the job.
    """

    async def create_disk(self, project_id: str, disk_id: str, size_bytes: int) -> str:
        """Creates an empty (all-zero) disk and returns its locator."""

    async def grow_disk(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        """Grows the disk to size_bytes, keeping its data; never shrinks."""

    async def undo_grow(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        """Takes back a grow_disk whose database change did not commit (the added tail was never visible)."""

    async def delete_disk(self, project_id: str, disk_id: str) -> None: ...

    async def restore_point(self, project_id: str, disk_id: str, restore_id: str) -> RestorePoint | None:
        """The restore point of the disk for the restore restore_id (its task id): the one an earlier attempt of
        that restore took, if there is one (the disk may be half-written since), else one taken now. None where
        the provider cannot roll a disk back: then the disk shows `restoring` until a retry completes it."""

    async def create_file_system(self, project_id: str, fs_id: str) -> str:
        """Creates an empty file system and returns its locator."""

    async def delete_file_system(self, project_id: str, fs_id: str) -> None: ...

    async def file_system_used_bytes(self, project_id: str, fs_id: str) -> int:
        """Bytes held by the file system's regular files; 0 when it is missing."""
