"""A provider's changed extents turned into the blocks a backup takes from its parent unread."""
from cbr_backup.datapath.extents import (FIEMAP_EXTENT_SHARED, PhysicalExtent, complement, shared_byte_ranges,
                                         unchanged_blocks)

KIB = 1024
BS = 128 * KIB


def test_complement_of_sorted_ranges():
    assert complement([], 100) == [(0, 100)]
    assert complement([(0, 100)], 100) == []
    assert complement([(10, 20), (15, 30), (50, 200)], 100) == [(0, 10), (30, 50)]


def test_only_whole_blocks_outside_every_change_are_unchanged():
    size = 10 * BS
    # A change of one byte in block 3 and one spanning blocks 6-7: blocks 0-2, 4-5, 8-9 are the base's.
    changed = [(3 * BS + 5, 3 * BS + 6), (6 * BS + 1, 7 * BS + 1)]
    assert unchanged_blocks(changed, BS, size) == [(0, 3), (4, 6), (8, 10)]
    assert unchanged_blocks([(0, size)], BS, size) == []
    assert unchanged_blocks([], BS, size) == [(0, 10)]


def test_the_short_last_block_counts_when_nothing_in_it_changed():
    size = 2 * BS + 4 * KIB
    assert unchanged_blocks([(0, BS)], BS, size) == [(1, 3)]
    assert unchanged_blocks([(size - 1, size)], BS, size) == [(0, 2)]


def test_changes_are_what_fiemap_does_not_share():
    # Two clones: the first 256 KiB shared at the same physical place, the next 128 KiB rewritten in the newer.
    old = [PhysicalExtent(0, 1 << 30, 384 * KIB, FIEMAP_EXTENT_SHARED)]
    new = [PhysicalExtent(0, 1 << 30, 256 * KIB, FIEMAP_EXTENT_SHARED), PhysicalExtent(256 * KIB, 5 << 30, BS, 0)]
    changed = complement(shared_byte_ranges(new, old), 3 * BS)
    assert changed == [(256 * KIB, 384 * KIB)]
    assert unchanged_blocks(changed, BS, 3 * BS) == [(0, 2)]
