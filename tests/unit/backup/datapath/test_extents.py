"""Allocated extents (SEEK_DATA / SEEK_HOLE), block ranges, and the FIEMAP sharing logic."""
import os

from cbr_backup.datapath.extents import (FIEMAP_EXTENT_SHARED, PhysicalExtent, block_ranges, changed_since,
                                         data_extents, fiemap, shared_byte_ranges)
from cbr_backup.datapath.pipeline import plan_pieces, subtract_ranges

KIB = 1024


def sparse_file(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in writes:
            f.seek(offset)
            f.write(b"\xab" * length)
        f.flush()
        os.fsync(f.fileno())
    return path


def test_data_extents_of_a_sparse_file(tmp_path):
    path = sparse_file(tmp_path / "disk", 4 << 20, [(0, 64 * KIB), (1 << 20, 128 * KIB), (3 << 20, 4 * KIB)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd) == [(0, 64 * KIB), (1 << 20, (1 << 20) + 128 * KIB), (3 << 20, (3 << 20) + 4 * KIB)]
    finally:
        os.close(fd)


def test_only_holes_and_empty(tmp_path):
    for size in (0, 1 << 20):
        path = sparse_file(tmp_path / f"disk{size}", size, [])
        fd = os.open(path, os.O_RDONLY)
        try:
            assert data_extents(fd) == []
        finally:
            os.close(fd)


def test_data_at_the_unaligned_end(tmp_path):
    size = (1 << 20) + 1000
    path = sparse_file(tmp_path / "disk", size, [(1 << 20, 1000)])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data_extents(fd) == [(1 << 20, size)]
        assert block_ranges(data_extents(fd), 64 * KIB) == [(16, 17)]
    finally:
        os.close(fd)


def test_block_ranges_round_out_and_merge():
    bs = 64 * KIB
    assert block_ranges([(0, 1), (bs - 1, bs + 1), (5 * bs, 6 * bs), (6 * bs, 6 * bs + 1)], bs) == [(0, 2), (5, 7)]


def test_pieces_and_subtraction():
    pieces = list(plan_pieces([(0, 5), (10, 11)], 4096, 10 * 4096 + 100, 2 * 4096))
    assert [(p.first_block, p.block_count, p.length) for p in pieces] == [
        (0, 2, 8192), (2, 2, 8192), (4, 1, 4096), (10, 1, 100)]
    assert subtract_ranges([(0, 10), (20, 30)], [(2, 4), (8, 22), (25, 26)]) == [(0, 2), (4, 8), (22, 25), (26, 30)]
    assert subtract_ranges([(0, 10)], []) == [(0, 10)]


def test_shared_ranges_need_same_physical_offset_and_shared_flag():
    s = FIEMAP_EXTENT_SHARED
    current = [PhysicalExtent(0, 1000, 100, s), PhysicalExtent(100, 5000, 100, s), PhysicalExtent(200, 9000, 50, 0)]
    previous = [PhysicalExtent(0, 1000, 150, s), PhysicalExtent(150, 7000, 100, s)]
    # [0,100): same physical. [100,150): current at 5000, previous at 1100: changed. [200,250): not shared.
    assert shared_byte_ranges(current, previous) == [(0, 100)]
    delayed = [PhysicalExtent(0, 1000, 100, s | 0x4)]  # delayed allocation: the address means nothing yet
    assert shared_byte_ranges(delayed, previous) == []


def test_no_sharing_between_copies_on_a_file_system_without_reflinks(tmp_path):
    a = sparse_file(tmp_path / "a", 1 << 20, [(0, 256 * KIB)])
    b = sparse_file(tmp_path / "b", 1 << 20, [(0, 256 * KIB)])
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        extents = fiemap(fa)
        assert extents is None or extents[0].logical == 0  # ext4, XFS, btrfs all have FIEMAP; tmpfs may not
        assert changed_since(fa, fb, 1 << 20) in (None, [(0, 1 << 20)])
    finally:
        os.close(fa)
        os.close(fb)


def test_merged_intersect_and_spans_by_block():
    from cbr_backup.datapath.extents import intersect, merged, spans_by_block
    assert merged([(50, 60), (0, 10), (5, 20), (20, 30), (40, 40)]) == [(0, 30), (50, 60)]
    assert intersect([(0, 30), (50, 60)], [(10, 55), (58, 100)]) == [(10, 30), (50, 55), (58, 60)]
    assert intersect([(0, 10)], [(10, 20)]) == []
    # cut at 16-byte blocks, widened to 4-byte pages, never past the 40-byte disk's end
    assert spans_by_block([(1, 3), (5, 6), (14, 19), (37, 50)], 16, 40, align=4) == {
        0: [(0, 8), (12, 16)], 1: [(0, 4)], 2: [(4, 8)]}
    assert spans_by_block([(14, 19)], 16, 40) == {0: [(14, 16)], 1: [(0, 3)]}
