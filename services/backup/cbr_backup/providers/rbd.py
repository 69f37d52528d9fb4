"""The Ceph RBD provider: a project's disks are RBD images in its namespace (DESIGN.md 15, 16).

Built on RbdImages (providers/rbd_images.py). A disk's image is named by its disk id; an image the operator made
before CBR came (any name) is registered once: its metadata `cbr.disk_id` then names the disk it is. Snapshots:
a user snapshot `cbr-<per-disk backup id>` per image (the anchor, the next diff's base) and, for a server's
disks, a group snapshot of a temporary group read as the one instant and dropped once every disk was read.
Restore points are user snapshots `cbr-restore-<task id>`, rolled back on failure. File systems are not RBD's:
the provider hands them to the local provider it is given (a composite by kind of resource).

librbd calls block: each runs on a worker thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import uuid
from dataclasses import dataclass, field

import rbd

from cbr_backup.datapath.blockio import BlockDevice
from cbr_backup.datapath.pipeline import default_workers
from cbr_backup.domain import errors, rules
from cbr_backup.providers.rbd_images import (READ_BLOCK, SNAPSHOT_PREFIX, ImageBusyError, ImageSnapshot, RbdImages,
                                             SnapshotSet, _aio_reads)

RESTORE_PREFIX = SNAPSHOT_PREFIX + "restore-"
DISK_ID_KEY = "cbr.disk_id"  # image metadata: the disk id of a registered image of the operator's


class RbdProvider:
    """Disks on RBD through `images`; file systems through `file_systems` (a LocalProvider), if any."""

    def __init__(self, images: RbdImages, file_systems=None):
        self.images = images
        self.file_systems = file_systems
        self._names: dict[tuple[str, str], str] = {}  # (project, disk id) -> image name, for registered images

    def prepare(self) -> None:
        if self.file_systems is not None:
            self.file_systems.prepare()

    def close(self) -> None:
        self.images.close()

    # Image names

    def image_name(self, project_id: str, disk_id: str) -> str:
        """The image of the disk: the one named by its id, else a registered image of the operator's."""
        rules.check_id(disk_id, "disk_id")
        known = self._names.get((project_id, disk_id))
        if known is not None:
            return known
        with self.images.namespace(project_id, create=False) as ioctx:
            if ioctx is None:
                return disk_id
            names = rbd.RBD().list(ioctx)
            if disk_id in names:
                return disk_id
            for name in (n for n in names if not _is_uuid(n)):  # only the operator's images are registered
                with contextlib.suppress(rbd.ImageNotFound, KeyError), rbd.Image(ioctx, name, read_only=True) as image:
                    if image.metadata_get(DISK_ID_KEY) == disk_id:
                        self._names[(project_id, disk_id)] = name
                        return name
        return disk_id  # missing: the caller's call fails with ImageNotFound

    def foreign_images(self, project_id: str) -> list[str]:
        """The project's images not named by a disk id: the operator's own (registered or not)."""
        with self.images.namespace(project_id, create=False) as ioctx:
            return [] if ioctx is None else sorted(n for n in rbd.RBD().list(ioctx) if not _is_uuid(n))

    def register_image(self, project_id: str, name: str) -> tuple[str, int]:
        """Makes the operator's image `name` a disk: returns (disk id, size); the same id when asked again."""
        with self.images.opened(project_id, name) as image:
            try:
                disk_id = image.metadata_get(DISK_ID_KEY)
            except KeyError:
                disk_id = str(uuid.uuid4())
                image.metadata_set(DISK_ID_KEY, disk_id)
            self._names[(project_id, disk_id)] = name
            return disk_id, image.size()

    def locator(self, project_id: str, disk_id: str) -> str:
        return f"rbd:{self.images.pool}/{self.images.namespace_for(project_id)}/{self.image_name(project_id, disk_id)}"

    # Disks

    async def create_disk(self, project_id: str, disk_id: str, size_bytes: int) -> str:
        return await asyncio.to_thread(self._create_disk, project_id, disk_id, size_bytes)

    def _create_disk(self, project_id: str, disk_id: str, size_bytes: int) -> str:
        rules.check_id(disk_id, "disk_id")
        try:
            self.images.create(project_id, disk_id, size_bytes)
        except rbd.NoSpace as exc:
            raise errors.PoolCapacityError(f"the RBD pool cannot hold a disk of {size_bytes} bytes") from exc
        return self.locator(project_id, disk_id)

    async def grow_disk(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        await asyncio.to_thread(self._set_size, project_id, disk_id, size_bytes, False)

    async def undo_grow(self, project_id: str, disk_id: str, size_bytes: int) -> None:
        await asyncio.to_thread(self._set_size, project_id, disk_id, size_bytes, True)

    def _set_size(self, project_id: str, disk_id: str, size_bytes: int, undo: bool) -> None:
        with self._disk(project_id, disk_id) as image:
            current = image.size()
            if size_bytes < current and not undo:
                raise ValueError(f"disk {disk_id} is {current} bytes; it cannot shrink to {size_bytes}")
            if size_bytes > current and undo:
                raise ValueError(f"disk {disk_id} is {current} bytes; undoing a grow cannot enlarge it")
            if size_bytes != current:
                image.resize(size_bytes)

    async def delete_disk(self, project_id: str, disk_id: str) -> None:
        await asyncio.to_thread(self._delete_disk, project_id, disk_id)

    def _delete_disk(self, project_id: str, disk_id: str) -> None:
        name = self.image_name(project_id, disk_id)
        with contextlib.suppress(FileNotFoundError), self._disk(project_id, disk_id) as image:
            for snap in _user_snaps(image):
                if snap.startswith(RESTORE_PREFIX):  # of a restore that never ended
                    image.remove_snap(snap)
        self.images.delete(project_id, name)  # with CBR's snapshots and group
        self._names.pop((project_id, disk_id), None)

    # Restore points

    async def disk_in_use(self, project_id: str, disk_id: str) -> str:
        return await asyncio.to_thread(self._lock_holders, project_id, disk_id)

    def _lock_holders(self, project_id: str, disk_id: str) -> str:
        try:
            self.images.check_not_in_use(project_id, self.image_name(project_id, disk_id))
        except rbd.ImageNotFound:
            return ""
        except ImageBusyError as exc:
            return str(exc)
        return ""

    async def restore_point(self, project_id: str, disk_id: str, restore_id: str,
                            force: bool = False) -> "RbdRestorePoint":
        return await asyncio.to_thread(self._restore_point, project_id, disk_id, restore_id, force)

    def _restore_point(self, project_id: str, disk_id: str, restore_id: str, force: bool) -> "RbdRestorePoint":
        """An RBD snapshot of the image before the restore's first write. Only a restore in place takes one, so
        this is where an image a running client holds the lock on is refused unless forced (DESIGN.md 15.3): the
        request was checked too, but a client may have started since."""
        if not force:
            self._check_not_in_use(project_id, disk_id)
        name = RESTORE_PREFIX + rules.check_id(restore_id, "restore_id")
        with self._disk(project_id, disk_id) as image:
            snaps = _user_snaps(image)
            if name not in snaps:
                for leftover in snaps:
                    if leftover.startswith(RESTORE_PREFIX):  # of a restore that never ended
                        image.remove_snap(leftover)
                image.create_snap(name)
        return RbdRestorePoint(self, project_id, disk_id, name)

    def _check_not_in_use(self, project_id: str, disk_id: str) -> None:
        try:
            self.images.check_not_in_use(project_id, self.image_name(project_id, disk_id))
        except rbd.ImageNotFound as exc:
            raise FileNotFoundError(f"disk {disk_id} has no image") from exc
        except ImageBusyError as exc:
            raise errors.DiskStatusError(
                f"disk {disk_id} is in use: {exc}; stop the client (detach the volume) before restoring it in "
                f"place, or restore to a new disk") from exc

    # Snapshots

    async def snapshot_disks(self, project_id: str, disks: dict[str, str]) -> "dict[str, RbdSnapshot]":
        return await asyncio.to_thread(self._snapshot_disks, project_id, disks)

    def _snapshot_disks(self, project_id: str, disks: dict[str, str]) -> "dict[str, RbdSnapshot]":
        names = {name: rules.check_id(name, "snapshot name") for name in disks}
        images = {name: self.image_name(project_id, disk_id) for name, disk_id in disks.items()}
        with self.images.namespace(project_id, create=False) as ioctx:
            existing = set(rbd.RBD().list(ioctx)) if ioctx is not None else set()
            missing = [disk_id for name, disk_id in disks.items() if images[name] not in existing]
            if missing:
                raise FileNotFoundError(f"disk {missing[0]} has no image")
            for name in images.values():  # a group a killed job left: an image is in one group at most
                _leave_cbr_group(ioctx, name)
        label = min(names)  # the set's group: the same for a retry of the same job
        taken = self.images.snapshot(project_id, list(images.values()), label,
                                     anchors={images[name]: name for name in names})
        shared = _SetReads(self.images, project_id, taken, len(disks))
        result = {}
        try:
            for name, disk_id in disks.items():
                snap = taken.of(images[name])
                with self.images.opened_snapshot(project_id, snap) as image:
                    size = image.size()
                    allocated = sum(end - start for start, end in _extents(image, size, None, data_only=True))
                result[name] = RbdSnapshot(disk_id, name, size, allocated, project_id, snap, shared)
        except BaseException:
            self.images.remove_snapshots(project_id, taken)
            raise
        return result

    async def changed_extents(self, project_id: str, snapshot: "RbdSnapshot", base_name: str):
        return await asyncio.to_thread(self._changed_extents, project_id, snapshot, base_name)

    def _changed_extents(self, project_id: str, snapshot: "RbdSnapshot", base_name: str):
        """diff_iterate from the base's anchor to the snapshot's content: everything written since, discards
        included (they read as zeros now); None when the base is gone."""
        base = SNAPSHOT_PREFIX + rules.check_id(base_name, "snapshot name")
        with self.images.opened_snapshot(project_id, snapshot.snap) as image:
            if base not in _user_snaps(image):
                return None
            return _extents(image, snapshot.size, base, data_only=False)

    async def open_snapshot(self, snapshot: "RbdSnapshot") -> "RbdDisk":
        return await asyncio.to_thread(self._open_snapshot, snapshot)

    def _open_snapshot(self, snapshot: "RbdSnapshot") -> "RbdDisk":
        return RbdDisk.open(self.images.opened_snapshot(snapshot.project_id, snapshot.snap),
                            f"rbd:{snapshot.snap.image}@{snapshot.snap.anchor}", on_close=snapshot.shared.read)

    async def snapshot_names(self, project_id: str, disk_id: str) -> list[str]:
        return await asyncio.to_thread(self._snapshot_names, project_id, disk_id)

    def _snapshot_names(self, project_id: str, disk_id: str) -> list[str]:
        try:
            with self._disk(project_id, disk_id, read_only=True) as image:
                return sorted(_backup_snaps(image))
        except FileNotFoundError:
            return []

    async def release_snapshot(self, project_id: str, disk_id: str, name: str) -> None:
        await asyncio.to_thread(self._release_snapshot, project_id, disk_id, name)

    def _release_snapshot(self, project_id: str, disk_id: str, name: str) -> None:
        anchor = SNAPSHOT_PREFIX + rules.check_id(name, "snapshot name")
        image = self.image_name(project_id, disk_id)
        with self.images.namespace(project_id, create=False) as ioctx:
            if ioctx is None:
                return
            # A failed job's set: its group (named by the set's smallest name) goes with that snapshot. Never another
            # group: the disk may be in the group of a backup running now (this may be an older base's release).
            _leave_cbr_group(ioctx, image, only=anchor)
        self.images.remove_snapshots(project_id, [ImageSnapshot(image, anchor)])

    async def retained_bytes(self, project_id: str, disk_id: str) -> int:
        return await asyncio.to_thread(self._retained_bytes, project_id, disk_id)

    def _retained_bytes(self, project_id: str, disk_id: str) -> int:
        """Per snapshot, its data the image has rewritten since (diff of the image from it, within the
        snapshot's data extents): what only the snapshot holds in the pool."""
        total = 0
        try:
            with self._disk(project_id, disk_id, read_only=True) as image:
                size = image.size()
                for name in _backup_snaps(image):
                    anchor = SNAPSHOT_PREFIX + name
                    rewritten = _extents(image, size, anchor, data_only=False)
                    image.set_snap(anchor)
                    try:
                        held = _extents(image, image.size(), None, data_only=True)
                    finally:
                        image.set_snap(None)
                    total += _overlap(rewritten, held)
        except FileNotFoundError:
            return 0
        return total

    async def open_for_restore(self, project_id: str, disk_id: str, fresh: bool, force: bool = False) -> "RbdDisk":
        return await asyncio.to_thread(self._open_for_restore, project_id, disk_id, fresh, force)

    def _open_for_restore(self, project_id: str, disk_id: str, fresh: bool, force: bool) -> "RbdDisk":
        if not fresh and not force:
            self._check_not_in_use(project_id, disk_id)
        disk = RbdDisk.open(self._disk(project_id, disk_id), f"rbd:{self.image_name(project_id, disk_id)}")
        if fresh:
            disk.truncate(0)  # drops every object: a retry never keeps an earlier attempt's blocks
        return disk

    @contextlib.contextmanager
    def _disk(self, project_id: str, disk_id: str, read_only: bool = False):
        """The disk's image; a missing one is a FileNotFoundError, as for the local provider's files."""
        try:
            with self.images.opened(project_id, self.image_name(project_id, disk_id), read_only) as image:
                yield image
        except rbd.ImageNotFound as exc:
            raise FileNotFoundError(f"disk {disk_id} has no image") from exc

    # File systems: the local provider's

    def _fs(self):
        if self.file_systems is None:
            raise errors.InvalidRestoreRequestError("file systems are not provided here (the RBD provider has "
                                                    "disks only)")
        return self.file_systems

    def file_system_path(self, project_id: str, fs_id: str):
        return self._fs().file_system_path(project_id, fs_id)

    async def create_file_system(self, project_id: str, fs_id: str) -> str:
        return await self._fs().create_file_system(project_id, fs_id)

    async def delete_file_system(self, project_id: str, fs_id: str) -> None:
        await self._fs().delete_file_system(project_id, fs_id)

    async def file_system_used_bytes(self, project_id: str, fs_id: str) -> int:
        return await self._fs().file_system_used_bytes(project_id, fs_id)


@dataclass
class _SetReads:
    """A snapshot set's group snapshot (two or more disks) lives until every disk of the set was read."""
    images: RbdImages
    project_id: str
    taken: SnapshotSet
    unread: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self) -> None:
        with self.lock:
            self.unread -= 1
            last = self.unread == 0
        if last and self.taken.images and self.taken.images[0].group is not None:
            with contextlib.suppress(Exception):  # a group left here goes with the disks' next snapshot set
                self.images.release_instant(self.project_id, self.taken)


@dataclass(frozen=True)
class RbdSnapshot:
    disk_id: str
    name: str
    size: int
    allocated_bytes: int
    project_id: str
    snap: ImageSnapshot
    shared: _SetReads
    change_base: bool = True  # the anchor stays: diff_iterate from it tells the next backup's changes


class RbdRestorePoint:
    """An RBD snapshot of the disk; rolling back makes the image the snapshot again (librbd rewrites the
    objects: interrupted, the image is half rolled back, but the point stays, so the retry's rollback
    finishes it)."""

    def __init__(self, provider: RbdProvider, project_id: str, disk_id: str, name: str):
        self._provider, self._project_id, self._disk_id, self.name = provider, project_id, disk_id, name

    async def roll_back(self) -> None:
        await asyncio.to_thread(self._roll_back)

    def _roll_back(self) -> None:
        with self._provider._disk(self._project_id, self._disk_id) as image:
            image.rollback_to_snap(self.name)
            image.remove_snap(self.name)

    async def release(self) -> None:
        await asyncio.to_thread(self._release)

    def _release(self) -> None:
        with contextlib.suppress(FileNotFoundError), self._provider._disk(self._project_id, self._disk_id) as image:
            if self.name in _user_snaps(image):
                image.remove_snap(self.name)


class RbdDisk(BlockDevice):
    """An open image (or image snapshot) for the data path. Several pipeline threads call it at once (librbd
    handles are thread-safe and its calls release the GIL); a read longer than an object goes out as aio
    reads of one object each, all in flight."""

    # One object per piece: each pipeline worker keeps one object read in flight, and a worker's buffers (the
    # read's bytes, the piece's values, librados' own) are half what 8 MiB pieces held (DESIGN.md 15.4).
    piece_size = READ_BLOCK
    # One backup worker fewer than a file disk gets (default_workers() + 1, as before 10.4; three on two cores):
    # each holds a piece, librbd's bytes of it and its values, and a fourth took the worker's peak RSS on the
    # 2-core bench machine past 300 MB (302 MB; DESIGN.md 10.4).
    backup_workers = default_workers() + 1

    def __init__(self, stack: contextlib.ExitStack, image, path: str, on_close=None):
        super().__init__(path)
        self._stack, self._image, self._on_close = stack, image, on_close

    @classmethod
    def open(cls, handle, path: str, on_close=None) -> "RbdDisk":
        stack = contextlib.ExitStack()
        try:
            image = stack.enter_context(handle)
        except BaseException:
            stack.close()
            raise
        return cls(stack, image, path, on_close)

    def read_into(self, buf: memoryview, offset: int, length: int) -> int:
        length = max(0, min(length, self._image.size() - offset))
        if length <= READ_BLOCK:
            data = self._image.read(offset, length) if length else b""
            buf[:len(data)] = data
            return len(data)
        pieces = ((start, min(READ_BLOCK, offset + length - start)) for start in range(offset, offset + length,
                                                                                        READ_BLOCK))
        done = 0
        for start, data in _aio_reads(self._image, pieces, -(-length // READ_BLOCK)):
            buf[start - offset:start - offset + len(data)] = data
            done += len(data)
        return done

    def write(self, data: memoryview, offset: int) -> None:
        with _capacity_as_enospc():
            self._image.write(bytes(data), offset)

    def zero(self, offset: int, length: int) -> None:
        with _capacity_as_enospc():
            self._image.write_zeroes(offset, length)  # deallocates whole objects: sparse stays sparse

    def size(self) -> int:
        return self._image.size()

    def data_extents(self, size: int) -> list[tuple[int, int]]:
        return _extents(self._image, min(size, self._image.size()), None, data_only=True)

    def truncate(self, size: int) -> None:
        if self._image.size() != size:
            with _capacity_as_enospc():
                self._image.resize(size)

    def sync(self) -> None:
        self._image.flush()

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
            if self._on_close is not None:
                self._on_close()


@contextlib.contextmanager
def _capacity_as_enospc():
    """A full pool or quota as the system's ENOSPC/EDQUOT: what the restore job turns into RESOURCE_EXHAUSTED."""
    try:
        yield
    except rbd.NoSpace as exc:
        raise OSError(errno.ENOSPC, f"the RBD pool is full ({exc})") from exc
    except rbd.DiskQuotaExceeded as exc:
        raise OSError(errno.EDQUOT, f"the RBD pool's quota is reached ({exc})") from exc


def _extents(image, size: int, since: str | None, data_only: bool) -> list[tuple[int, int]]:
    """[start, end) ranges diff_iterate reports from `since` (None: from nothing, i.e. the data) to the image's
    current snapshot, merged; data_only keeps only ranges that hold data (not discards)."""
    found: list[tuple[int, int]] = []

    def add(offset: int, length: int, exists: bool) -> None:
        if exists or not data_only:
            found.append((offset, offset + length))

    if size:
        image.diff_iterate(0, size, since, add)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    total, j = 0, 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            total += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
    return total


def _user_snaps(image) -> list[str]:
    return [s["name"] for s in image.list_snaps()
            if s.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER]


def _backup_snaps(image) -> list[str]:
    """The names (per-disk backup ids) of CBR's backup snapshots of the image."""
    return [name[len(SNAPSHOT_PREFIX):] for name in _user_snaps(image)
            if name.startswith(SNAPSHOT_PREFIX) and _is_uuid(name[len(SNAPSHOT_PREFIX):])]


def _leave_cbr_group(ioctx, name: str, only: str | None = None) -> None:
    """Removes the CBR group the image is in (with its group snapshot), if any (and if named `only`, when
    given); never an operator's group."""
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            group = image.group()["name"]
    except rbd.ImageNotFound:
        return
    if not group.startswith(SNAPSHOT_PREFIX) or (only is not None and group != only):
        return
    with contextlib.suppress(rbd.ObjectNotFound, rbd.ImageNotFound):
        handle = rbd.Group(ioctx, group)
        for snap in list(handle.list_snaps()):
            handle.remove_snap(snap["name"])
        for member in list(handle.list_images()):
            with contextlib.suppress(rbd.ObjectNotFound, rbd.ImageNotFound):
                handle.remove_image(ioctx, member["name"])
        rbd.RBD().group_remove(ioctx, group)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
