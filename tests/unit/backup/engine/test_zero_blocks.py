"""zero_blocks marks every all-zero block, partial last blocks included, for every buffer type."""
from __future__ import annotations

import mmap
import random

import pytest

from cbr_backup.engine import zero_blocks
from cbr_backup.engine import reference


def test_empty_input():
    assert zero_blocks(b"", 4096) == b""


@pytest.mark.parametrize("size", [1, 7, 8, 63, 64, 65, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 1])
def test_all_zero_including_partial_last_block(size):
    expected = b"\x01" * -(-size // 4096)
    assert zero_blocks(bytes(size), 4096) == expected
    assert reference.zero_blocks(bytes(size), 4096) == expected


@pytest.mark.parametrize("block_size", [1, 3, 8, 16, 63, 64, 65, 100, 512, 4096])
def test_single_nonzero_byte_at_every_position_class(block_size):
    blocks = 5
    size = blocks * block_size - (block_size // 2)  # partial last block (except for block_size 1)
    positions = set()
    for block in range(blocks):
        start = block * block_size
        for offset in (0, 1, 7, 8, 15, 16, 63, 64, block_size // 2, block_size - 2, block_size - 1):
            if 0 <= offset < block_size and start + offset < size:
                positions.add(start + offset)
    positions.add(size - 1)
    for position in sorted(positions):
        data = bytearray(size)
        data[position] = 0x80
        result = zero_blocks(data, block_size)
        assert result == reference.zero_blocks(data, block_size)
        assert result[position // block_size] == 0
        assert result.count(0) == 1


@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_on_sparse_random_data(seed):
    rnd = random.Random(seed)
    block_size = rnd.choice([1, 5, 64, 100, 512, 4096])
    data = bytearray(rnd.randrange(0, 40_000))
    for _ in range(rnd.randrange(0, 6)):
        if data:
            data[rnd.randrange(len(data))] = rnd.randrange(1, 256)
    assert zero_blocks(data, block_size) == reference.zero_blocks(data, block_size)


@pytest.mark.parametrize("block_size", [1, 7, 8, 16, 64, 100, 4096])
def test_exact_size_buffers(block_size, exact_size):
    for size in [*range(1, 140), 4095, 4096, 4097]:
        for data in (bytes(size), bytes(size - 1) + b"\x01"):
            assert zero_blocks(exact_size(data), block_size) == reference.zero_blocks(data, block_size)


def test_buffer_types():
    data = bytearray(3 * 4096 + 10)
    data[5000] = 1
    expected = b"\x01\x00\x01\x01"
    assert zero_blocks(bytes(data), 4096) == expected
    assert zero_blocks(data, 4096) == expected
    assert zero_blocks(memoryview(data), 4096) == expected
    assert zero_blocks(memoryview(b"\x00" + bytes(data))[1:], 4096) == expected  # unaligned start
    with mmap.mmap(-1, len(data)) as mapped:
        mapped.write(data)
        assert zero_blocks(mapped, 4096) == expected


def test_block_larger_than_buffer():
    assert zero_blocks(bytes(10), 1 << 40) == b"\x01"
    assert zero_blocks(b"\x00" * 9 + b"\x01", 1 << 40) == b"\x00"


@pytest.mark.parametrize("block_size", [0, -1, -4096])
def test_bad_block_size_raises_value_error(block_size):
    with pytest.raises(ValueError):
        zero_blocks(b"\x00" * 10, block_size)
    with pytest.raises(ValueError):
        reference.zero_blocks(b"\x00" * 10, block_size)


def test_non_buffer_raises_type_error():
    with pytest.raises(TypeError):
        zero_blocks("text", 4096)


def test_differing_pages_maps_every_page_the_short_last_one_too():
    from cbr_backup.engine import differing_pages
    base = bytes(range(256)) * 40  # 10,240 bytes: pages 0, 1 and a short page 2
    changed = bytearray(base)
    changed[4096] ^= 1
    changed[-1] ^= 1
    assert differing_pages(changed, base, 4096) == (b"\x06", 2)
    assert differing_pages(base, base, 4096) == (b"\x00", 0)
    assert differing_pages(memoryview(bytes(9 * 4096)), b"\x01" * 9 * 4096, 4096) == (b"\xff\x01", 9)
    with pytest.raises(ValueError):
        differing_pages(b"ab", b"a", 4096)
