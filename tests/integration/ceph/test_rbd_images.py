"""The librbd adapter against a real Ceph cluster: tenancy by namespace, snapshot sets at one instant, changed
extents by diff_iterate, snapshot reads with reads in flight, in-place writes and the lock rule."""
from __future__ import annotations

import contextlib
import random
import threading
import uuid

import pytest

MIB = 1 << 20


@pytest.fixture(scope="module")
def images(ceph):
    from cbr_backup.providers.rbd_images import RbdImages

    with RbdImages(ceph.conf_path, pool=ceph.pool) as images:
        yield images


@pytest.fixture
def project():
    return str(uuid.uuid4())


@contextlib.contextmanager
def other_client(ceph, images, project, name):
    """The image opened by another librados client, as a running VM has it."""
    import rbd

    handle = ceph.rados()
    ioctx = handle.open_ioctx(ceph.pool)
    ioctx.set_namespace(images.namespace_for(project))
    try:
        with rbd.Image(ioctx, name) as image:
            yield image
    finally:
        ioctx.close()
        handle.shutdown()


def test_each_project_sees_only_its_namespace(ceph, images, project):
    import rbd

    other = str(uuid.uuid4())
    assert images.list_images(project) == {}  # no namespace yet: nothing, and none made
    images.create(project, "disk-a", 8 * MIB)
    images.create(other, "disk-b", 4 * MIB)
    # an image the operator made before CBR came is a protectable too
    ioctx = ceph.rados().open_ioctx(ceph.pool)
    ioctx.set_namespace(project)
    rbd.RBD().create(ioctx, "operator-volume", 2 * MIB)
    assert images.list_images(project) == {"disk-a": 8 * MIB, "operator-volume": 2 * MIB}
    assert images.list_images(other) == {"disk-b": 4 * MIB}
    images.resize(project, "disk-a", 16 * MIB)
    assert images.size(project, "disk-a") == 16 * MIB
    with pytest.raises(rbd.ImageNotFound):
        images.resize(other, "disk-a", 32 * MIB)  # another project's name is not there
    images.delete(project, "disk-a")
    images.delete(project, "disk-a")  # idempotent
    assert images.list_images(project) == {"operator-volume": 2 * MIB}


def test_namespaces_are_configurable(ceph, project):
    from cbr_backup.providers.rbd_images import RbdImages

    with RbdImages(ceph.conf_path, pool=ceph.pool, namespace="tenant-{project}",
                   namespaces={"ops": "operations"}) as images:
        assert images.namespace_for(project) == f"tenant-{project}"
        assert images.namespace_for("ops") == "operations"
        images.create("ops", "vol", MIB)
        assert images.list_images("ops") == {"vol": MIB}
        images.delete("ops", "vol")


def test_changed_extents_and_snapshot_reads(images, project):
    images.create(project, "disk", 64 * MIB)
    rng = random.Random(5)
    first = rng.randbytes(MIB)
    images.write_differing(project, "disk", [(0, first)])
    s1 = images.snapshot(project, ["disk"], "s1").of("disk")
    second = rng.randbytes(8192)
    images.write_differing(project, "disk", [(40 * MIB, second)])
    s2 = images.snapshot(project, ["disk"], "s2").of("disk")
    assert s2.group is None  # one image: its user snapshot is the content

    changed = images.changed_extents(project, s2, since=s1)
    assert [(e.offset, e.length, e.exists) for e in changed] == [(40 * MIB, 8192, True)]
    assert sum(e.length for e in images.changed_extents(project, s1, since=None)) == MIB

    content = bytearray(64 * MIB)
    content[:MIB] = first
    expected_s1 = bytes(content)
    content[40 * MIB:40 * MIB + 8192] = second
    pieces = list(images.read(project, s2, block=3 * MIB))  # more pieces than reads in flight
    assert [offset for offset, _ in pieces] == list(range(0, 64 * MIB, 3 * MIB))
    assert b"".join(data for _, data in pieces) == bytes(content)
    assert b"".join(data for _, data in images.read(project, s1)) == expected_s1
    assert list(images.read(project, s2, extents=[(40 * MIB, 8192)])) == [(40 * MIB, second)]

    images.remove_snapshots(project, [s1, s2])
    assert images.user_snapshots(project, "disk") == []


def test_a_set_of_images_is_snapshotted_at_one_instant(ceph, images, project):
    """A writer in another client writes block i of `a`, then block i of `b`, over and over: in every snapshot
    set `b` is never ahead of `a`. The writer sees no error (held off, not failed), and the diff from one set's
    anchor covers all that differs between its instant and the next."""
    import rbd

    for name in ("a", "b"):
        images.create(project, name, 16 * MIB)
    stop, errors, done = threading.Event(), [], [0]
    sets, contents, changed = [], [], []
    with other_client(ceph, images, project, "a") as a, other_client(ceph, images, project, "b") as b:
        def writer():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    a.write(i.to_bytes(8, "big") * 512, (i % 4096) * 4096)
                    b.write(i.to_bytes(8, "big") * 512, (i % 4096) * 4096)
                    done[0] = i
                except rbd.Error as exc:
                    errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for label in ("t1", "t2", "t3"):
                while done[0] < 50 * (len(sets) + 1):
                    stop.wait(0.01)
                snapshots = images.snapshot(project, ["a", "b"], label)
                assert snapshots.of("a").group == snapshots.of("b").group == f"cbr-{label}"
                contents.append({name: b"".join(piece for _, piece in images.read(project, snapshots.of(name)))
                                 for name in ("a", "b")})
                if sets:
                    changed.append(images.changed_extents(project, snapshots.of("a"), since=sets[-1].of("a")))
                images.release_instant(project, snapshots)  # an image is in one group at a time
                sets.append(snapshots)
        finally:
            stop.set()
            thread.join()
    assert errors == []

    def newest(data: bytes) -> int:
        return max(int.from_bytes(data[i:i + 8], "big") for i in range(0, len(data), 4096))

    for content in contents:
        assert newest(content["b"]) <= newest(content["a"])
    for old, new, extents in zip(contents, contents[1:], changed):
        differing = {i for i in range(0, len(new["a"]), 4096) if old["a"][i:i + 4096] != new["a"][i:i + 4096]}
        covered = {i for e in extents for i in range(e.offset, e.offset + e.length, 4096)}
        assert differing and differing <= covered

    ioctx = ceph.rados().open_ioctx(ceph.pool)
    ioctx.set_namespace(project)
    assert rbd.RBD().group_list(ioctx) == []
    assert images.user_snapshots(project, "a") == ["cbr-t1", "cbr-t2", "cbr-t3"]  # the anchors stay
    for snapshots in sets:
        images.remove_snapshots(project, snapshots)
    assert images.user_snapshots(project, "a") == images.user_snapshots(project, "b") == []


def test_a_failed_snapshot_leaves_nothing(ceph, images, project):
    import rbd

    images.create(project, "a", MIB)
    with pytest.raises(rbd.ImageNotFound):
        images.snapshot(project, ["a", "missing"], "broken")
    assert images.user_snapshots(project, "a") == []
    ioctx = ceph.rados().open_ioctx(ceph.pool)
    ioctx.set_namespace(project)
    assert rbd.RBD().group_list(ioctx) == []


def test_in_place_writes_need_the_image_free(ceph, images, project):
    from cbr_backup.providers.rbd_images import ImageBusyError

    images.create(project, "disk", 8 * MIB)
    block = bytes([7]) * MIB
    assert images.write_differing(project, "disk", [(0, block), (MIB, bytes(MIB))]) == MIB  # zeros already there
    assert images.lock_owners(project, "disk") == []
    with other_client(ceph, images, project, "disk") as running:
        running.write(b"\x07", 0)  # a running client writes (the same byte): it holds the exclusive lock
        assert len(images.lock_owners(project, "disk")) == 1
        with pytest.raises(ImageBusyError):
            images.write_differing(project, "disk", [(0, block)])
    assert images.lock_owners(project, "disk") == []  # closed: lock released
    # only the block that differs is written; zeros go in as write_zeroes
    assert images.write_differing(project, "disk", [(0, block), (MIB, block), (2 * MIB, bytes(MIB))]) == MIB
    assert images.write_differing(project, "disk", [(0, bytes(MIB))]) == MIB
    snap = images.snapshot(project, ["disk"], "check").of("disk")
    data = b"".join(piece for _, piece in images.read(project, snap))
    assert data[:MIB] == bytes(MIB) and data[MIB:2 * MIB] == block
    images.remove_snapshots(project, [snap])

    # many blocks (several batches of reads and writes in flight): every other one differs
    piece = 256 << 10
    blocks = [(i * piece, bytes([i % 2]) * piece) for i in range(24)]
    # the image holds zeros but for 7s in [1 MiB, 2 MiB): the odd pieces differ, and the even ones there
    assert images.write_differing(project, "disk", blocks) == 14 * piece
    assert images.write_differing(project, "disk", blocks) == 0


def test_a_retry_clears_what_a_dead_attempt_left(ceph, images, project):
    """A worker killed after the snapshots (group still there): the retry, with the job's label, takes the set
    afresh; removing the set by its label leaves no snapshot and no group."""
    import rbd

    from cbr_backup.providers.rbd_images import SnapshotSet

    for name in ("a", "b"):
        images.create(project, name, MIB)
    images.snapshot(project, ["a", "b"], "job-7")  # then the worker dies: nothing released
    images.write_differing(project, "a", [(0, b"new")])
    again = images.snapshot(project, ["a", "b"], "job-7")
    assert list(images.read(project, again.of("a"), extents=[(0, 3)])) == [(0, b"new")]
    images.remove_snapshots(project, SnapshotSet.named("job-7", ["a", "b"]))
    assert images.user_snapshots(project, "a") == images.user_snapshots(project, "b") == []
    ioctx = ceph.rados().open_ioctx(ceph.pool)
    ioctx.set_namespace(project)
    assert rbd.RBD().group_list(ioctx) == []

    images.snapshot(project, ["a", "b"], "job-8")  # dies again; then the disks are deleted
    images.delete(project, "a")
    images.delete(project, "b")
    assert images.list_images(project) == {}
    assert rbd.RBD().group_list(ioctx) == []
