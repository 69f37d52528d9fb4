"""The provider contract: one suite, run against every provider (the local one on ext4 and on XFS, and RBD).

Everything goes through the interface of providers/base.py, as the workers use it: disks are written with the
writer a restore gets, snapshots read with the reader a backup gets. Where a provider may answer "unknown"
(changed extents), the suite checks the answer is sound when given, and that XFS and RBD give one.
"""
from __future__ import annotations

import mmap
import random
import uuid

import pytest

from cbr_backup.datapath.blockio import disk_size, read_at, write_at

MIB = 1024 * 1024
PROJECT = "project-contract"
SIZE = 16 * MIB


def new_id() -> str:
    return str(uuid.uuid4())


def aligned(data: bytes) -> memoryview:
    """data in a page-aligned buffer (direct I/O wants one)."""
    buffer = mmap.mmap(-1, max(len(data), mmap.PAGESIZE))
    buffer[:len(data)] = data
    return memoryview(buffer)[:len(data)]


async def write(provider, disk_id: str, offset: int, data: bytes) -> None:
    writer = await provider.open_for_restore(PROJECT, disk_id, False)
    try:
        write_at(writer, aligned(data), offset)
    finally:
        writer.close()


def read_all(handle, size: int) -> bytes:
    if size == 0:
        return b""
    buffer = mmap.mmap(-1, size)
    assert read_at(handle, memoryview(buffer), 0, size) == size
    return bytes(buffer)


async def image_of(provider, snapshot) -> bytes:
    reader = await provider.open_snapshot(snapshot)
    try:
        return read_all(reader, snapshot.size)
    finally:
        reader.close()


async def disk_bytes(provider, disk_id: str) -> bytes:
    writer = await provider.open_for_restore(PROJECT, disk_id, False)
    try:
        return read_all(writer, disk_size(writer))
    finally:
        writer.close()


async def disk_with_data(provider, seed: int) -> tuple[str, bytes]:
    """A 16 MiB disk with 8 MiB of random data in four places and holes between."""
    disk_id = new_id()
    await provider.create_disk(PROJECT, disk_id, SIZE)
    rng = random.Random(seed)
    for offset in (0, 4 * MIB, 9 * MIB, 14 * MIB):
        await write(provider, disk_id, offset, rng.randbytes(2 * MIB))
    return disk_id, await disk_bytes(provider, disk_id)


async def test_a_snapshot_set_is_one_instant_and_later_writes_do_not_reach_it(provider):
    a, a_bytes = await disk_with_data(provider, 1)
    b, b_bytes = await disk_with_data(provider, 2)
    names = {new_id(): a, new_id(): b}
    snapshots = await provider.snapshot_disks(PROJECT, names)
    assert {s.disk_id for s in snapshots.values()} == {a, b}
    await write(provider, a, 0, b"\xff" * MIB)
    await write(provider, b, 4 * MIB, b"\xee" * MIB)
    for name, disk_id in names.items():
        snapshot = snapshots[name]
        assert (snapshot.name, snapshot.size) == (name, SIZE)
        assert snapshot.allocated_bytes >= 8 * MIB  # its data extents, not the holes
        assert await image_of(provider, snapshot) == (a_bytes if disk_id == a else b_bytes)
    assert sorted(await provider.snapshot_names(PROJECT, a)) == [n for n, d in names.items() if d == a]


async def test_changed_extents_are_sound_and_on_xfs_they_are_the_writes(provider):
    disk_id, _ = await disk_with_data(provider, 3)
    base_name, next_name = new_id(), new_id()
    base = (await provider.snapshot_disks(PROJECT, {base_name: disk_id}))[base_name]
    written = [(5 * MIB, 6 * MIB), (12 * MIB, 13 * MIB)]  # inside data, and into a hole
    for (start, end), seed in zip(written, (4, 5)):
        await write(provider, disk_id, start, random.Random(seed).randbytes(end - start))
    current = (await provider.snapshot_disks(PROJECT, {next_name: disk_id}))[next_name]
    changed = await provider.changed_extents(PROJECT, current, base_name)
    if provider.kind in ("xfs", "rbd"):
        assert changed is not None and current.change_base  # clones: FIEMAP tells; RBD: diff_iterate
    else:
        assert changed is None and not current.change_base  # ext4 copies share nothing: unknown
    old, new = await image_of(provider, base), await image_of(provider, current)
    if changed is not None:
        # Sound: every byte outside the changed extents is the base's.
        outside, previous = bytearray(new), bytearray(old)
        for start, end in changed:
            outside[start:end] = previous[start:end] = bytes(end - start)
        assert outside == previous
        # Tight: the changed extents that hold data on either side are the writes (holes of both are free).
        mask = bytearray(SIZE)  # 1 where a byte is changed and not written: it must be a hole on both sides
        for start, end in changed:
            mask[start:end] = b"\1" * (end - start)
        for start, end in written:
            mask[start:end] = bytes(end - start)
        stray = [i for i in range(0, SIZE, 4096) if mask[i] and (new[i:i + 4096].strip(b"\0")
                                                               or old[i:i + 4096].strip(b"\0"))]
        assert stray == [], f"{len(stray)} blocks of unwritten data counted as changed"
    assert await provider.changed_extents(PROJECT, current, new_id()) is None  # no such base: unknown


async def test_a_retry_replaces_its_snapshot_and_release_is_idempotent(provider):
    disk_id, _ = await disk_with_data(provider, 6)
    name = new_id()
    await provider.snapshot_disks(PROJECT, {name: disk_id})
    await write(provider, disk_id, 0, b"\x11" * MIB)
    again = (await provider.snapshot_disks(PROJECT, {name: disk_id}))[name]  # the disk as it is now
    assert (await image_of(provider, again))[:MIB] == b"\x11" * MIB
    assert await provider.snapshot_names(PROJECT, disk_id) == [name]
    await provider.release_snapshot(PROJECT, disk_id, name)
    await provider.release_snapshot(PROJECT, disk_id, name)
    assert await provider.snapshot_names(PROJECT, disk_id) == []


async def test_a_failed_snapshot_set_leaves_nothing(provider):
    disk_id, _ = await disk_with_data(provider, 7)
    with pytest.raises(FileNotFoundError):
        await provider.snapshot_disks(PROJECT, {new_id(): disk_id, new_id(): new_id()})  # one disk is missing
    assert await provider.snapshot_names(PROJECT, disk_id) == []


async def test_deleting_a_disk_drops_its_snapshots(provider):
    disk_id, _ = await disk_with_data(provider, 8)
    await provider.snapshot_disks(PROJECT, {new_id(): disk_id})
    await provider.delete_disk(PROJECT, disk_id)
    assert await provider.snapshot_names(PROJECT, disk_id) == []


async def test_retained_bytes_count_what_only_the_snapshots_hold(provider):
    disk_id, _ = await disk_with_data(provider, 9)
    await provider.snapshot_disks(PROJECT, {new_id(): disk_id})
    await write(provider, disk_id, 0, b"\x22" * (2 * MIB))  # the disk moves away from 2 MiB of the snapshot
    retained = await provider.retained_bytes(PROJECT, disk_id)
    if provider.kind in ("xfs", "rbd"):
        assert 2 * MIB <= retained < 3 * MIB  # a clone or an RBD snapshot costs only what the disk rewrote since
    else:
        assert retained >= 8 * MIB  # a copy holds all of its data
    assert await provider.retained_bytes(PROJECT, new_id()) == 0


async def test_a_fresh_restore_writer_starts_empty_and_an_existing_one_keeps_the_disk(provider):
    disk_id, before = await disk_with_data(provider, 10)
    assert await disk_bytes(provider, disk_id) == before
    writer = await provider.open_for_restore(PROJECT, disk_id, True)
    writer.close()
    assert await disk_bytes(provider, disk_id) == b""  # emptied: the data path sizes it
    await provider.grow_disk(PROJECT, disk_id, SIZE)
    assert await disk_bytes(provider, disk_id) == bytes(SIZE)


async def test_in_place_restore_is_never_silently_half_done(provider):
    """A restore point taken first; the restore half writes the disk and fails; rolling back gives the disk
    as it was. A retry of the same restore gets the same point (of the disk before, not half written)."""
    disk_id, before = await disk_with_data(provider, 11)
    restore_id = new_id()
    point = await provider.restore_point(PROJECT, disk_id, restore_id)
    assert point is not None
    await write(provider, disk_id, 4 * MIB, b"\x33" * MIB)  # the first attempt's half write
    again = await provider.restore_point(PROJECT, disk_id, restore_id)  # the retry's
    await write(provider, disk_id, 9 * MIB, b"\x44" * MIB)
    await again.roll_back()
    assert await disk_bytes(provider, disk_id) == before
    await again.release()  # spent by the rollback: releasing is no error

    done = await provider.restore_point(PROJECT, disk_id, new_id())  # a restore that completes
    await write(provider, disk_id, 0, b"\x55" * MIB)
    await done.release()
    assert (await disk_bytes(provider, disk_id))[:MIB] == b"\x55" * MIB


async def test_a_missing_disk_is_not_found_and_deleting_it_is_no_error(provider):
    await disk_with_data(provider, 12)  # the project exists; this disk does not
    missing = new_id()
    with pytest.raises(FileNotFoundError):
        await provider.open_for_restore(PROJECT, missing, False)
    with pytest.raises(FileNotFoundError):
        await provider.restore_point(PROJECT, missing, new_id())
    with pytest.raises(FileNotFoundError):
        await provider.grow_disk(PROJECT, missing, 2 * SIZE)
    assert await provider.snapshot_names(PROJECT, missing) == []
    assert await provider.retained_bytes(PROJECT, missing) == 0
    await provider.delete_disk(PROJECT, missing)
