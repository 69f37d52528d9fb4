"""The local provider: disks as sparse raw files in a pool folder, file systems as folders under a root.

Layout: `<pool_dir>/<project_id>/<disk_id>.raw` and `<fs_root>/<project_id>/<fs_id>/`; restore points beside
the disks, in `<pool_dir>/<project_id>/.restore-points/<disk_id>.<task_id>.raw` (one file system with the disk, so
a point can be a reflink clone and a rollback a rename); backup snapshots in
`<pool_dir>/.snapshots/<project_id>/<disk_id>.<backup_id>.raw`, on the pool's file system (clones on XFS and
btrfs: then a later clone's FIEMAP tells which extents changed since, DESIGN.md 16). Every path component
comes from a checked UUID or a checked project id, never from a name a user typed. Blocking file calls run on a worker thread so the event loop
keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from cbr_backup.domain import errors, rules
from cbr_backup.folders import fsync_folder
from cbr_backup.providers.base import UnsafePathError

RESTORE_POINTS = ".restore-points"
SNAPSHOTS = ".snapshots"

DISK_SUFFIX = ".raw"
_PART_SUFFIX = ".part"
MAX_WALK_ENTRIES = 100_000  # bound on the usage walk of one file system; past it the sum is a lower bound
_CAPACITY_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class LocalProvider:
    def __init__(self, pool_dir: str | os.PathLike, fs_root: str | os.PathLike,
                 max_walk_entries: int = MAX_WALK_ENTRIES):
        if not str(pool_dir) or not str(fs_root):
            raise ValueError("the local provider needs a pool folder and a file-system root")
        self.pool_dir = Path(pool_dir).absolute()
        self.fs_root = Path(fs_root).absolute()
        self._max_walk_entries = max_walk_entries

    def prepare(self) -> None:
        """Creates the pool folder and the file-system root if missing (at start-up)."""
        for folder in (self.pool_dir, self.fs_root):
            folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                raise UnsafePathError(f"{folder} is not a folder")

    # Paths

    def disk_path(self, project_id: str, disk_id: str) -> Path:
        return self.pool_dir / rules.check_project_folder(project_id) / (rules.check_id(disk_id, "disk_id")
                                                                         + DISK_SUFFIX)

    def file_system_path(self, project_id: str, fs_id: str) -> Path:
        return self.fs_root / rules.check_project_folder(project_id) / rules.check_id(fs_id, "file_system_id")

    # Disks

    @contextlib.contextmanager
    def hold_writes(self, paths):
        """Holds the disks' writers off while a snapshot of all of them is taken: one instant for a server.

        Writers of pool disks take flock(LOCK_SH) on the disk file while they write (as a hypervisor holds
        its image); this takes LOCK_EX on every disk, in path order so two holders never deadlock."""
        fds = []
        try:
            for path in sorted(os.fspath(p) for p in paths):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            for fd in fds:
                os.close(fd)

    async def create_disk(self, project_id: str, disk_id: str, size_bytes: int) -> str:
        return await asyncio.to_thread(self._create_disk, project_id, disk_id, size_bytes)

    async def grow_disk(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        await asyncio.to_thread(self._set_disk_size, project_id, disk_id, size_bytes, False)

    async def undo_grow(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        await asyncio.to_thread(self._set_disk_size, project_id, disk_id, size_bytes, True)

    async def delete_disk(self, project_id: str, disk_id: str) -> None:
        await asyncio.to_thread(self._delete_disk, project_id, disk_id)

    def _create_disk(self, project_id: str, disk_id: str, size_bytes: int) -> str:
        path = self.disk_path(project_id, disk_id)
        folder = _own_folder(path.parent)
        # O_EXCL: never adopt a file that is there already; O_NOFOLLOW: never write through a symlink.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.ftruncate(fd, size_bytes)  # sparse: no block is written, so a new disk costs no space
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            _raise_capacity(exc, size_bytes)
            raise
        fsync_folder(folder)
        return str(path)

    def _set_disk_size(self, project_id: str, disk_id: str, size_bytes: int, undo: bool) -> None:
        path = self.disk_path(project_id, disk_id)
        _require_real_parent(path)
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            current = os.fstat(fd).st_size
            if size_bytes < current and not undo:
                raise ValueError(f"disk {disk_id} is {current} bytes; it cannot shrink to {size_bytes}")
            if size_bytes > current and undo:
                raise ValueError(f"disk {disk_id} is {current} bytes; undoing a grow cannot enlarge it")
            try:
                os.ftruncate(fd, size_bytes)  # growing adds a hole: the existing data stays as it is
            except OSError as exc:
                _raise_capacity(exc, size_bytes)
                raise
            os.fsync(fd)
        finally:
            os.close(fd)

    def _delete_disk(self, project_id: str, disk_id: str) -> None:
        path = self.disk_path(project_id, disk_id)
        if not _require_real_parent(path):
            return
        for point in (path.parent / RESTORE_POINTS).glob(f"{disk_id}.*"):  # of a restore that never ended
            point.unlink(missing_ok=True)
        for snapshot in self._snapshot_folder(project_id).glob(f"{disk_id}.*"):  # its change base, leftovers
            snapshot.unlink(missing_ok=True)
        try:
            os.unlink(path)  # unlink removes a symlink itself, never its target
        except FileNotFoundError:
            pass

    # Restore points

    async def disk_in_use(self, project_id: str, disk_id: str) -> str:
        return ""  # a pool file has no clients that CBR could see

    async def restore_point(self, project_id: str, disk_id: str, restore_id: str,
                            force: bool = False) -> "LocalRestorePoint | None":
        return await asyncio.to_thread(self._restore_point, project_id, disk_id, restore_id)

    def _restore_point(self, project_id: str, disk_id: str, restore_id: str) -> "LocalRestorePoint | None":
        """A snapshot of the disk beside it (a reflink clone where the file system has them, else a copy of its
        data extents), written under a temporary name and renamed once whole, so a point that exists is
        always a complete image from before the restore's first write. None when the pool has no room for the
        copy: the restore then goes on without one (the disk shows `restoring` until it is whole)."""
        from cbr_backup.datapath.snapshot import take_snapshot  # the data path loads only where it is used

        disk = self.disk_path(project_id, disk_id)
        if not _require_real_parent(disk):
            raise FileNotFoundError(f"disk {disk_id} has no file")
        folder = _own_folder(disk.parent / RESTORE_POINTS)
        point = folder / f"{disk_id}.{rules.check_id(restore_id, 'restore_id')}{DISK_SUFFIX}"
        if point.exists():
            return LocalRestorePoint(point, disk)  # an earlier attempt of this restore took it
        for leftover in folder.glob(f"{disk_id}.*"):  # a cut-off copy, or a point a restore that never ended left
            leftover.unlink(missing_ok=True)
        part = point.with_name(point.name + _PART_SUFFIX)
        try:
            take_snapshot(disk, part, quiesce=self.hold_writes([disk]))
            fd = os.open(part, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in _CAPACITY_ERRNOS:
                return None
            raise
        os.rename(part, point)
        fsync_folder(folder)
        return LocalRestorePoint(point, disk)

    # Backup snapshots and change bases

    def _snapshot_folder(self, project_id: str) -> Path:
        return self.pool_dir / SNAPSHOTS / rules.check_project_folder(project_id)

    def _snapshot_path(self, project_id: str, disk_id: str, name: str) -> Path:
        return (self._snapshot_folder(project_id)
                / f"{rules.check_id(disk_id, 'disk_id')}.{rules.check_id(name, 'snapshot name')}{DISK_SUFFIX}")

    async def snapshot_disks(self, project_id: str, disks: dict[str, str]) -> "dict[str, LocalSnapshot]":
        return await asyncio.to_thread(self._snapshot_disks, project_id, disks)

    def _snapshot_disks(self, project_id: str, disks: dict[str, str]) -> "dict[str, LocalSnapshot]":
        from cbr_backup.datapath.snapshot import take_snapshot

        sources = {name: self.disk_path(project_id, disk_id) for name, disk_id in disks.items()}
        for source in sources.values():
            if not _require_real_parent(source):
                raise FileNotFoundError(f"{source.name} has no file")
        folder = _own_folder(_own_folder(self.pool_dir / SNAPSHOTS) / rules.check_project_folder(project_id))
        taken: dict[str, LocalSnapshot] = {}
        try:
            with self.hold_writes(sources.values()):
                for name, disk_id in disks.items():
                    target = self._snapshot_path(project_id, disk_id, name)
                    target.unlink(missing_ok=True)  # an earlier attempt's, of the disk as it was then
                    snap = take_snapshot(sources[name], target)
                    taken[name] = LocalSnapshot(disk_id, name, snap.size, _allocated(target), target, snap.reflinked)
            fsync_folder(folder)
        except BaseException:
            for snapshot in taken.values():
                snapshot.path.unlink(missing_ok=True)
            raise
        return taken

    async def changed_extents(self, project_id: str, snapshot: "LocalSnapshot", base_name: str):
        return await asyncio.to_thread(self._changed_extents, project_id, snapshot, base_name)

    def _changed_extents(self, project_id: str, snapshot: "LocalSnapshot", base_name: str):
        """Everything but the extents both clones still share (FIEMAP): None unless both are clones."""
        from cbr_backup.datapath.extents import changed_since

        if not snapshot.reflinked:
            return None  # a copy shares nothing: nothing to conclude
        base = self._snapshot_path(project_id, snapshot.disk_id, base_name)
        try:
            previous = os.open(base, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            current = os.open(snapshot.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                return changed_since(current, previous, snapshot.size)
            finally:
                os.close(current)
        finally:
            os.close(previous)

    async def open_snapshot(self, snapshot: "LocalSnapshot"):
        from cbr_backup.datapath.blockio import open_disk
        return await asyncio.to_thread(open_disk, snapshot.path, os.O_RDONLY | os.O_NOFOLLOW)

    async def snapshot_names(self, project_id: str, disk_id: str) -> list[str]:
        return await asyncio.to_thread(self._snapshot_names, project_id, disk_id)

    def _snapshot_names(self, project_id: str, disk_id: str) -> list[str]:
        folder = self._snapshot_folder(project_id)
        prefix = rules.check_id(disk_id, "disk_id") + "."
        if not _require_real_parent(folder / "x"):
            return []
        return sorted(p.name[len(prefix):-len(DISK_SUFFIX)] for p in folder.glob(f"{prefix}*{DISK_SUFFIX}"))

    async def release_snapshot(self, project_id: str, disk_id: str, name: str) -> None:
        path = self._snapshot_path(project_id, disk_id, name)
        if _require_real_parent(path):
            await asyncio.to_thread(path.unlink, True)

    async def retained_bytes(self, project_id: str, disk_id: str) -> int:
        return await asyncio.to_thread(self._retained_bytes, project_id, disk_id)

    def _retained_bytes(self, project_id: str, disk_id: str) -> int:
        from cbr_backup.datapath.extents import exclusive_bytes

        total = 0
        for name in self._snapshot_names(project_id, disk_id):
            try:
                fd = os.open(self._snapshot_path(project_id, disk_id, name), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                total += exclusive_bytes(fd)
            finally:
                os.close(fd)
        return total

    async def open_for_restore(self, project_id: str, disk_id: str, fresh: bool, force: bool = False):
        from cbr_backup.datapath.blockio import open_disk

        path = self.disk_path(project_id, disk_id)
        if not _require_real_parent(path):
            raise FileNotFoundError(f"disk {disk_id} has no file")
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_TRUNC if fresh else 0)  # never creates: the disk exists
        return await asyncio.to_thread(open_disk, path, flags)

    # File systems

    async def create_file_system(self, project_id: str, fs_id: str) -> str:
        return await asyncio.to_thread(self._create_file_system, project_id, fs_id)

    async def delete_file_system(self, project_id: str, fs_id: str) -> None:
        await asyncio.to_thread(self._delete_file_system, project_id, fs_id)

    async def file_system_used_bytes(self, project_id: str, fs_id: str) -> int:
        return await asyncio.to_thread(self._used_bytes, project_id, fs_id)

    def _create_file_system(self, project_id: str, fs_id: str) -> str:
        path = self.file_system_path(project_id, fs_id)
        folder = _own_folder(path.parent)
        path.mkdir(mode=0o755)
        fsync_folder(folder)
        return str(path)

    def _delete_file_system(self, project_id: str, fs_id: str) -> None:
        path = self.file_system_path(project_id, fs_id)
        if not _require_real_parent(path):
            return
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(mode):
            os.unlink(path)  # a symlink or file put in the folder's place: remove it, never what it points to
            return
        if not shutil.rmtree.avoids_symlink_attacks:
            raise UnsafePathError("this platform's rmtree may follow symlinks; refusing to delete a tree")
        shutil.rmtree(path)

    def _used_bytes(self, project_id: str, fs_id: str) -> int:
        """Sum of regular file sizes, walking without following symlinks and at most max_walk_entries entries."""
        path = self.file_system_path(project_id, fs_id)
        try:
            if not _require_real_parent(path) or not stat.S_ISDIR(os.lstat(path).st_mode):
                return 0
        except FileNotFoundError:
            return 0
        total, seen = 0, 0
        pending = [path]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > self._max_walk_entries:
                            return total
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                pending.append(Path(entry.path))
                            elif entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
                        except OSError:
                            continue  # vanished or unreadable while we walked
            except OSError:
                continue
        return total


@dataclass(frozen=True)
class LocalSnapshot:
    """A backup snapshot of a pool disk: a file beside it; reflinked if a clone (shares extents with the disk)."""
    disk_id: str
    name: str
    size: int
    allocated_bytes: int
    path: Path
    reflinked: bool

    @property
    def change_base(self) -> bool:
        return self.reflinked  # a copy shares no extent with a later clone: keeping it tells nothing


def _allocated(path: Path) -> int:
    from cbr_backup.datapath.extents import data_extents
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sum(end - start for start, end in data_extents(fd))
    finally:
        os.close(fd)


class LocalRestorePoint:
    """A restore point of a pool disk: a whole image of it on the disk's file system. Rolling back renames it
    over the disk file, which is atomic: the disk is either as it was or as the restore left it, never a mix,
    whatever stops the rollback. (The disk file is replaced, not rewritten: nothing may hold it open for
    writing while it is restored in place, as for any in-place restore.)"""

    def __init__(self, path: Path, disk: Path):
        self.path = path
        self.disk = disk

    async def roll_back(self) -> None:
        await asyncio.to_thread(self._roll_back)

    def _roll_back(self) -> None:
        _require_real_parent(self.disk)
        os.rename(self.path, self.disk)
        fsync_folder(self.disk.parent)

    async def release(self) -> None:
        await asyncio.to_thread(self.path.unlink, True)


def _own_folder(folder: Path) -> Path:
    """The project's folder inside a provider root, created if missing; it must be a real folder, not a link."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise UnsafePathError(f"{folder} is not a folder (a symlink?); refusing to use it")
    return folder


def _require_real_parent(path: Path) -> bool:
    """False if the project's folder is missing; raises if it is a symlink or anything but a folder, so no
    call ever reaches through a planted link to files outside the provider's roots."""
    try:
        mode = os.lstat(path.parent).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(mode):
        raise UnsafePathError(f"{path.parent} is not a folder (a symlink?); refusing to use it")
    return True


def _raise_capacity(exc: OSError, size_bytes: int) -> None:
    if exc.errno in _CAPACITY_ERRNOS:
        raise errors.PoolCapacityError(
            f"the disk pool cannot hold a disk of {size_bytes} bytes ({os.strerror(exc.errno)})") from exc
