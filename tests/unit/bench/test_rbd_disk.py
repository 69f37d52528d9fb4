"""The RBD row's pure parts: locators, diff extents rounded to blocks, pieces, and the change step as writes
(the same bytes a file and an image get)."""

import pytest

from bench import pools
from bench.rbd_disk import blocks_bytes, parse_locator, pieces
from bench.workload import CHANGE_BLOCK, MIB, change_writes, data_extents, generate, mutate

K128 = 128 << 10


def test_a_locator_names_pool_namespace_and_image():
    assert parse_locator("rbd:rbd/dev/0f1e") == ("rbd", "dev", "0f1e")
    assert parse_locator("rbd:vols//vm-1") == ("vols", "", "vm-1")
    for bad in ("/pool/disk.raw", "rbd:rbd/0f1e", "rbd:/dev/x", "rbd:rbd/dev/"):
        with pytest.raises(ValueError):
            parse_locator(bad)


def test_extents_count_each_block_they_touch_once():
    assert blocks_bytes([]) == 0
    assert blocks_bytes([(0, 1)]) == K128  # one byte costs its block
    assert blocks_bytes([(K128 - 1, 2)]) == 2 * K128  # straddling a boundary: both blocks
    assert blocks_bytes([(0, K128), (100, 200), (K128 // 2, 10)]) == K128  # overlaps count once
    assert blocks_bytes([(4 * MIB, 64 << 10), (4 * MIB + (64 << 10), 64 << 10)]) == K128
    assert blocks_bytes([(0, 4 * MIB), (8 * MIB, 0)]) == 4 * MIB  # an empty extent is nothing
    assert blocks_bytes([(0, 5)], block=4096) == 4096


def test_pieces_cover_a_range_in_order():
    assert list(pieces(0, 10, 4)) == [(0, 4), (4, 4), (8, 2)]
    assert list(pieces(3, 3, 4)) == []


def test_the_change_as_writes_is_what_mutate_writes(tmp_path):
    disk = tmp_path / "d.raw"
    generate(disk, 8 * MIB, seed=3, sync=False)
    expected = bytearray(disk.read_bytes())
    writes = list(change_writes(8 * MIB, 1.0, seed=7))
    assert [offset for offset, _ in writes] == sorted(offset for offset, _ in writes)
    assert all(len(data) == CHANGE_BLOCK and offset % CHANGE_BLOCK == 0 for offset, data in writes)
    for offset, data in writes:
        expected[offset:offset + len(data)] = data
    chosen = mutate(disk, 1.0, seed=7, sync=False)
    assert disk.read_bytes() == bytes(expected)
    assert chosen == [offset // CHANGE_BLOCK for offset, _ in writes]
    assert list(change_writes(8 * MIB, 1.0, seed=7)) == writes  # a pure function of its arguments


def test_data_extents_skip_holes(tmp_path):
    disk = tmp_path / "sparse.raw"
    with open(disk, "wb") as f:
        f.truncate(8 * MIB)
        f.seek(2 * MIB)
        f.write(b"x" * MIB)
    extents = list(data_extents(disk))
    covered = sum(end - start for start, end in extents)
    assert extents[0][0] <= 2 * MIB and extents[0][1] >= 3 * MIB
    assert MIB <= covered < 8 * MIB  # the file system may round to its blocks, never the whole file
    assert list(data_extents(tmp_path / "sparse.raw")) == extents


def test_the_rbd_pool_says_why_it_is_unavailable(monkeypatch):
    monkeypatch.setattr(pools.os, "geteuid", lambda: 1000)
    assert "not root" in pools.unavailable_reason("rbd")
    assert pools.unavailable_reason("ext4") is None
    assert "rbd" in pools.POOLS
