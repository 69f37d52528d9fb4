"""What the backup service needs from a provider of disks and file systems: the inventory (create, grow,
delete) and the data plane (snapshots, changed extents, readers and writers for the data path, restore points).

Workers call only this interface, never a provider's paths (DESIGN.md 16). The data path reads and writes the
objects it hands out: today `blockio.DiskFile` (an open descriptor, direct where the file system allows it),
read at offsets by several threads at once and written at offsets; a provider without descriptors (librbd)
hands out an object with the same read-at / write-at / size shape.
"""
from __future__ import annotations

from typing import Protocol

Extents = list[tuple[int, int]]  # [start, end) byte ranges, sorted, not overlapping


class UnsafePathError(RuntimeError):
    """A provider path is not what it must be (e.g. a symlink where a folder belongs); nothing was touched."""


class RestorePoint(Protocol):
    """A disk's contents at one moment, kept while an in-place restore writes the disk, so that a failed restore
    puts the disk back as it was (DESIGN.md 7.1). It survives the worker: a retry of the same restore finds it."""

    async def roll_back(self) -> None:
        """Makes the disk what it was when the point was taken, all at once or not at all; spends the point."""

    async def release(self) -> None:
        """Drops the point once the restore completed; no error if it is gone already."""


class DiskSnapshot(Protocol):
    """One disk's image at the instant its snapshot set was taken. It is named by the backup that took it (the
    per-disk backup id), survives the worker, and is kept after that backup as the disk's change base until
    the worker releases it (the retained-base rules: DESIGN.md 16.2)."""

    disk_id: str
    name: str
    size: int             # bytes
    allocated_bytes: int  # what a full read of it reads (data extents; holes are skipped)
    change_base: bool     # whether keeping it lets a later snapshot tell its changes (a copy cannot: ext4)


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

    async def disk_in_use(self, project_id: str, disk_id: str) -> str:
        """Who holds the disk open for writing besides CBR (e.g. the clients holding an RBD image's lock), or ""
        when nobody does or the provider cannot tell. An in-place restore into a held disk needs `force`."""

    async def restore_point(self, project_id: str, disk_id: str, restore_id: str,
                            force: bool = False) -> RestorePoint | None:
        """The restore point of the disk for the restore restore_id (its task id): the one an earlier attempt of
        that restore took, if there is one (the disk may be half-written since), else one taken now. None where
        the provider cannot roll a disk back: then the disk shows `restoring` until a retry completes it."""

    async def create_file_system(self, project_id: str, fs_id: str) -> str:
        """Creates an empty file system and returns its locator."""

    async def delete_file_system(self, project_id: str, fs_id: str) -> None: ...

    async def file_system_used_bytes(self, project_id: str, fs_id: str) -> int:
        """Bytes held by the file system's regular files; 0 when it is missing."""

    # The data plane (DESIGN.md 16)

    async def snapshot_disks(self, project_id: str, disks: dict[str, str]) -> dict[str, DiskSnapshot]:
        """Crash-consistent snapshots of the disks {snapshot name: disk id} at one instant (the disks' writers
        are held off while all are taken). A snapshot of that name that an earlier attempt left is replaced.
        On failure none of them is left behind."""

    async def changed_extents(self, project_id: str, snapshot: DiskSnapshot, base_name: str) -> Extents | None:
        """Byte ranges of snapshot that may differ from the disk's retained snapshot base_name: everything
        outside them is known to hold the same bytes in both. None when unknown (no such snapshot, or the
        provider cannot tell): then the backup reads every allocated block and compares digests."""

    async def open_snapshot(self, snapshot: DiskSnapshot):
        """A reader of the snapshot for the data path (DiskFile-shaped); the caller closes it."""

    async def snapshot_names(self, project_id: str, disk_id: str) -> list[str]:
        """The names of the disk's snapshots that exist (retained bases and leftovers of cut-off jobs)."""

    async def release_snapshot(self, project_id: str, disk_id: str, name: str) -> None:
        """Drops the snapshot; no error if it is gone already."""

    async def retained_bytes(self, project_id: str, disk_id: str) -> int:
        """Pool bytes held only by the disk's snapshots (blocks the disk has since rewritten; a shared block
        counts once, in the disk): what keeping them costs the pool."""

    async def open_for_restore(self, project_id: str, disk_id: str, fresh: bool, force: bool = False):
        """A writer of an existing disk for a restore (DiskFile-shaped); fresh empties it first (a new disk:
        a retry never keeps an earlier attempt's blocks). The caller closes it, then sizes the disk with
        grow_disk if it is larger than the image."""
