"""Disks as Ceph RBD images, through librbd (Debian's python3-rbd): the calls a Ceph provider is built from.

Tenancy: each project's images live in an RBD namespace of one pool (by default named after the project id); a
project sees and acts only on the images there, including images the operator made before CBR came.

Snapshots of a set of images at one instant (DESIGN.md section 15): each image gets a user snapshot (`anchor`),
the base from which the next backup's diff_iterate starts; for two or more images, a group snapshot taken right
after holds their contents at one instant (librbd holds every image's writers off while it takes it). Pacific's
diff_iterate cannot start from a group snapshot, hence the anchors: everything that differs between this
instant and the next was written after this anchor, so a diff from the anchor is a correct (slightly larger)
superset. One image needs no group: its user snapshot is both the content and the anchor.

All calls block (librbd is synchronous here); the provider runs them in threads."""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import rados
import rbd

SNAPSHOT_PREFIX = "cbr-"
READ_BLOCK = 4 << 20  # one RBD object with the default layout
READS_IN_FLIGHT = 8
_GROUP_SNAPSHOT = "instant"
# librbd's cache is off for CBR's client: a backup reads each snapshot block once and a restore writes each
# block once and flushes at the end, so the cache (32 MiB per open image by default) only held copies
# (the worker's peak RSS, DESIGN.md 15.4).
CLIENT_CONF = {"rbd_cache": "false"}


class ImageBusyError(RuntimeError):
    """An in-place write was asked for while another client holds the image's exclusive lock."""


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    exists: bool  # False: the range was discarded (reads as zeros)


@dataclass(frozen=True)
class ImageSnapshot:
    """One image's part of a snapshot set. `anchor` is a user snapshot, the base of the next diff; `group` names
    the group (and its snapshot) that holds the content when the set had several images, else None and the
    anchor is the content."""

    image: str
    anchor: str
    group: str | None = None


@dataclass(frozen=True)
class SnapshotSet:
    label: str
    images: tuple[ImageSnapshot, ...]

    @classmethod
    def named(cls, label: str, images: Sequence[str], anchors: Mapping[str, str] | None = None) -> SnapshotSet:
        """The names snapshot() gives a set: also how a retry finds what a job that died left behind. anchors:
        an anchor label per image (e.g. its per-disk backup id), over the set's label."""
        group = SNAPSHOT_PREFIX + label if len(images) > 1 else None
        return cls(label, tuple(ImageSnapshot(image, SNAPSHOT_PREFIX + (anchors or {}).get(image, label), group)
                                for image in images))

    def of(self, image: str) -> ImageSnapshot:
        return next(snap for snap in self.images if snap.image == image)


class RbdImages:
    """One librados connection; images of project P are in `pool`/namespace_for(P)."""

    def __init__(self, conf_path: str, *, pool: str = "rbd", namespace: str = "{project}",
                 namespaces: Mapping[str, str] | None = None, client_name: str | None = None,
                 reads_in_flight: int = READS_IN_FLIGHT, keyring: str | None = None):
        self.pool = pool
        self._template = namespace
        self._explicit = dict(namespaces or {})  # project id -> namespace, over the template
        self._reads_in_flight = max(1, reads_in_flight)
        conf = dict(CLIENT_CONF, **({"keyring": keyring} if keyring else {}))
        self._rados = rados.Rados(conffile=conf_path, name=client_name, conf=conf)
        self._rados.connect(timeout=30)
        self._rbd = rbd.RBD()

    def close(self) -> None:
        self._rados.shutdown()

    def __enter__(self) -> RbdImages:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def namespace_for(self, project_id: str) -> str:
        return self._explicit.get(project_id) or self._template.format(project=project_id)

    # inventory ---------------------------------------------------------------------------------------------

    def list_images(self, project_id: str) -> dict[str, int]:
        """Every image of the project with its size; empty when its namespace does not exist yet."""
        with self._ioctx(project_id, create=False) as ioctx:
            if ioctx is None:
                return {}
            sizes = {}
            for name in self._rbd.list(ioctx):
                with contextlib.suppress(rbd.ImageNotFound), rbd.Image(ioctx, name, read_only=True) as image:
                    sizes[name] = image.size()
            return sizes

    def create(self, project_id: str, name: str, size: int) -> None:
        with self._ioctx(project_id) as ioctx:
            self._rbd.create(ioctx, name, size)  # pacific's default features: exclusive-lock, object-map, fast-diff

    def resize(self, project_id: str, name: str, size: int) -> None:
        with self._image(project_id, name) as image:
            image.resize(size)

    def delete(self, project_id: str, name: str) -> None:
        """Removes the image and CBR's snapshots (and group) of it; no error if it is gone already."""
        with self._ioctx(project_id, create=False) as ioctx:
            if ioctx is None:
                return
            try:
                with rbd.Image(ioctx, name) as image:
                    group = image.group()["name"]  # "" when in none
                    if group.startswith(SNAPSHOT_PREFIX):  # left by a job that died
                        self._remove(ioctx, [], group)
                    for snap in list(image.list_snaps()):
                        if snap["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_USER and \
                                snap["name"].startswith(SNAPSHOT_PREFIX):
                            image.remove_snap(snap["name"])
                self._rbd.remove(ioctx, name)
            except rbd.ImageNotFound:
                pass

    def size(self, project_id: str, name: str) -> int:
        with self._image(project_id, name, read_only=True) as image:
            return image.size()

    # who uses an image -------------------------------------------------------------------------------------

    def lock_owners(self, project_id: str, name: str) -> list[str]:
        """Clients holding a lock on the image: the exclusive lock a running client takes when it writes (listed
        with the tag "internal") or an advisory lock (`rbd lock add`). As "client.N at address"."""
        with self._image(project_id, name, read_only=True) as image:
            lockers = image.list_lockers()
            return [f"{client} at {address}" for client, _cookie, address in (lockers or {}).get("lockers", ())]

    def check_not_in_use(self, project_id: str, name: str) -> None:
        """Raises ImageBusyError when another client holds the image's lock (FAILED_PRECONDITION upstream)."""
        owners = self.lock_owners(project_id, name)
        if owners:
            raise ImageBusyError(f"image {name} is locked by {', '.join(owners)}")

    # snapshots ---------------------------------------------------------------------------------------------

    def snapshot(self, project_id: str, names: Sequence[str], label: str,
                 anchors: Mapping[str, str] | None = None) -> SnapshotSet:
        """Snapshots of the images at one instant, named after `label` (unique per backup job). What an earlier
        attempt with this label left (a worker killed mid-way) is removed first; on failure, whatever this call
        made is removed again."""
        planned = SnapshotSet.named(label, names, anchors)
        group = planned.images[0].group if names else None
        taken: list[ImageSnapshot] = []
        with self._ioctx(project_id) as ioctx:
            self._remove(ioctx, planned.images, group)
            try:
                for snap in planned.images:
                    with rbd.Image(ioctx, snap.image) as image:
                        # proxied to the lock owner, which holds its writes off meanwhile: consistent per image
                        image.create_snap(snap.anchor)
                    taken.append(snap)
                if group is not None:
                    self._rbd.group_create(ioctx, group)
                    handle = rbd.Group(ioctx, group)
                    for name in names:
                        handle.add_image(ioctx, name)  # fails if the image is in a group already
                    handle.create_snap(_GROUP_SNAPSHOT)  # every image's lock held at once: one instant
            except BaseException:
                self._remove(ioctx, taken, group)
                raise
        return planned

    def release_instant(self, project_id: str, snapshots: SnapshotSet) -> None:
        """Drops the group snapshot once the backup has read it; the anchors stay as the next diff's base."""
        with self._ioctx(project_id) as ioctx:
            self._remove(ioctx, [], snapshots.images[0].group if snapshots.images else None)

    def remove_snapshots(self, project_id: str, snapshots: SnapshotSet | Iterable[ImageSnapshot]) -> None:
        """Removes the snapshots (anchors and group); no error for parts already gone."""
        images = list(snapshots.images if isinstance(snapshots, SnapshotSet) else snapshots)
        with self._ioctx(project_id, create=False) as ioctx:
            if ioctx is not None:
                self._remove(ioctx, images, next((s.group for s in images if s.group), None))

    def user_snapshots(self, project_id: str, name: str) -> list[str]:
        """CBR's snapshots of the image (e.g. to find leftovers of a job that died)."""
        with self._image(project_id, name, read_only=True) as image:
            return [snap["name"] for snap in image.list_snaps()
                    if snap["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_USER
                    and snap["name"].startswith(SNAPSHOT_PREFIX)]

    def _remove(self, ioctx, images: Iterable[ImageSnapshot], group: str | None) -> None:
        if group is not None:
            with contextlib.suppress(rbd.ObjectNotFound, rbd.ImageNotFound):
                handle = rbd.Group(ioctx, group)
                with contextlib.suppress(rbd.ObjectNotFound):
                    handle.remove_snap(_GROUP_SNAPSHOT)
                for member in list(handle.list_images()):
                    with contextlib.suppress(rbd.ObjectNotFound, rbd.ImageNotFound):
                        handle.remove_image(ioctx, member["name"])
                self._rbd.group_remove(ioctx, group)
        for snap in images:
            with contextlib.suppress(rbd.ImageNotFound, rbd.ObjectNotFound), rbd.Image(ioctx, snap.image) as image:
                image.remove_snap(snap.anchor)

    # reading -----------------------------------------------------------------------------------------------

    def changed_extents(self, project_id: str, snap: ImageSnapshot,
                        since: ImageSnapshot | None) -> list[Extent]:
        """What may differ between `since` (an earlier snapshot of the image) and `snap`, by diff_iterate from
        since's anchor: a superset (see the module's docstring). Everything written when since is None."""
        with self._snapshot_image(project_id, snap) as image:
            extents: list[Extent] = []
            image.diff_iterate(0, image.size(), since.anchor if since else None,
                               lambda offset, length, exists: extents.append(Extent(offset, length, bool(exists))))
            return extents

    def read(self, project_id: str, snap: ImageSnapshot, extents: Iterable[tuple[int, int]] | None = None,
             block: int = READ_BLOCK) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of the snapshot's content in order, in pieces of at most `block` bytes, with several
        aio_reads in flight; the whole image when extents is None."""
        with self._snapshot_image(project_id, snap) as image:
            size = image.size()
            spans = [(0, size)] if extents is None else list(extents)
            pieces = ((start, min(block, end - start))
                      for offset, length in spans
                      for end in (min(offset + length, size),)
                      for start in range(offset, end, block))
            yield from _aio_reads(image, pieces, self._reads_in_flight)

    # writing -----------------------------------------------------------------------------------------------

    def write_differing(self, project_id: str, name: str, blocks: Iterable[tuple[int, bytes]], *,
                        force: bool = False) -> int:
        """Writes each (offset, data) that differs from what the image holds there (zeros as write_zeroes, so a
        sparse image stays sparse); returns the bytes written. Refuses with ImageBusyError while another client
        holds the image's lock, unless forced."""
        if not force:
            self.check_not_in_use(project_id, name)
        written = 0
        with self._image(project_id, name) as image:
            batch: list[tuple[int, bytes]] = []
            for offset, data in blocks:
                batch.append((offset, bytes(data)))
                if len(batch) == self._reads_in_flight:
                    written += _write_differing(image, batch)
                    batch = []
            written += _write_differing(image, batch)
            image.flush()
        return written

    # handles -----------------------------------------------------------------------------------------------

    # For the provider (providers/rbd.py), which holds handles open across calls.

    def namespace(self, project_id: str, create: bool = True):
        """The project's namespace as an ioctx (None when missing and not created); a context manager."""
        return self._ioctx(project_id, create)

    def opened(self, project_id: str, name: str, read_only: bool = False):
        return self._image(project_id, name, read_only)

    def opened_snapshot(self, project_id: str, snap: ImageSnapshot):
        return self._snapshot_image(project_id, snap)

    @contextlib.contextmanager
    def _ioctx(self, project_id: str, create: bool = True):
        ioctx = self._rados.open_ioctx(self.pool)
        try:
            namespace = self.namespace_for(project_id)
            if namespace and not self._rbd.namespace_exists(ioctx, namespace):
                if not create:
                    yield None
                    return
                with contextlib.suppress(rbd.ImageExists):  # made meanwhile by another caller
                    self._rbd.namespace_create(ioctx, namespace)
            ioctx.set_namespace(namespace)
            yield ioctx
        finally:
            ioctx.close()

    @contextlib.contextmanager
    def _image(self, project_id: str, name: str, read_only: bool = False):
        with self._ioctx(project_id, create=False) as ioctx:
            if ioctx is None:
                raise rbd.ImageNotFound(f"no image {name} in project {project_id}")
            with rbd.Image(ioctx, name, read_only=read_only) as image:
                yield image

    @contextlib.contextmanager
    def _snapshot_image(self, project_id: str, snap: ImageSnapshot):
        """The image opened read-only at the snapshot's content: the group snapshot when there is one."""
        with self._image(project_id, snap.image, read_only=True) as image:
            if snap.group is None:
                image.set_snap(snap.anchor)
            else:
                image.set_snap_by_id(_group_snap_id(image, snap.group))
            yield image


def _group_snap_id(image: rbd.Image, group: str) -> int:
    for entry in image.list_snaps():
        if entry["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_GROUP and \
                entry.get("group", {}).get("name") == group:
            return entry["id"]
    raise rbd.ImageNotFound(f"image has no snapshot of group {group}")


def _write_differing(image: rbd.Image, batch: list[tuple[int, bytes]]) -> int:
    """Reads the batch's ranges with all reads in flight, then writes the ranges that differ, all in flight."""
    current = dict(_aio_reads(image, ((offset, len(data)) for offset, data in batch), len(batch)))
    pending: list[tuple[int, threading.Event, list]] = []
    for offset, data in batch:
        if current[offset] == data:
            continue
        done, box = threading.Event(), []

        def complete(completion, done=done, box=box):
            box.append(completion.get_return_value())
            done.set()

        if data.count(0) == len(data):
            image.aio_write_zeroes(offset, len(data), complete)
        else:
            image.aio_write(data, offset, complete)
        pending.append((offset, done, box))
    for offset, done, box in pending:
        done.wait()
        if box[0] < 0:
            raise OSError(-box[0], f"RBD write at {offset} failed")
    return sum(len(data) for offset, data in batch if current[offset] != data)


def _aio_reads(image: rbd.Image, pieces: Iterable[tuple[int, int]], in_flight: int) -> Iterator[tuple[int, bytes]]:
    """Keeps up to in_flight reads queued in librbd and yields their results in order."""
    window: deque[tuple[int, threading.Event, list]] = deque()

    def submit(offset: int, length: int) -> None:
        done, box = threading.Event(), []

        def complete(completion, data):
            box.append(data if completion.get_return_value() >= 0 else completion.get_return_value())
            done.set()

        image.aio_read(offset, length, complete)
        window.append((offset, done, box))

    pending = iter(pieces)
    try:
        for piece in pending:
            submit(*piece)
            if len(window) < in_flight:
                continue
            yield _take(window)
        while window:
            yield _take(window)
    finally:
        for _offset, done, _box in window:  # a caller that stops early: let librbd finish into our buffers
            done.wait()


def _take(window: deque) -> tuple[int, bytes]:
    offset, done, box = window.popleft()
    done.wait()
    if isinstance(box[0], int):
        raise OSError(-box[0], f"RBD read at {offset} failed")
    return offset, bytes(box[0])
