"""The C FastCDC cutter agrees with the pure-Python reference on seeded random inputs and sizes."""
from __future__ import annotations

import random

import pytest

from cbr_backup.engine import _chunker, cdc_cuts
from cbr_backup.engine import reference


def test_gear_table_is_the_same_in_c_and_python():
    assert _chunker.gear_table() == reference.GEAR


def random_sizes(rnd: random.Random) -> tuple[int, int, int]:
    min_size = rnd.randrange(64, 1024)
    avg_size = rnd.randrange(min_size, 4 * min_size + 1)
    max_size = rnd.randrange(avg_size, 4 * avg_size + 1)
    return min_size, avg_size, max_size


def random_data(rnd: random.Random, size: int) -> bytes:
    kind = rnd.randrange(3)
    if kind == 0:
        return rnd.randbytes(size)
    if kind == 1:  # low entropy: few distinct bytes in runs
        out = bytearray()
        while len(out) < size:
            out += bytes([rnd.choice(b"\x00ab")]) * rnd.randrange(1, 300)
        return bytes(out[:size])
    block = rnd.randbytes(rnd.randrange(1, 700))  # repeated block: periodic hash
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("seed", range(60))
def test_matches_reference(seed):
    rnd = random.Random(seed)
    min_size, avg_size, max_size = random_sizes(rnd)
    data = random_data(rnd, rnd.randrange(0, 12 * max_size))
    for final in (False, True):
        assert cdc_cuts(data, min_size, avg_size, max_size, final) == reference.cdc_cuts(
            data, min_size, avg_size, max_size, final
        )


@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_for_power_of_two_sizes(seed):
    rnd = random.Random(1000 + seed)
    min_size = 1 << rnd.randrange(6, 11)
    avg_size = min_size << rnd.randrange(0, 3)
    max_size = avg_size << rnd.randrange(0, 3)
    data = random_data(rnd, rnd.randrange(0, 8 * max_size))
    assert cdc_cuts(data, min_size, avg_size, max_size, final=True) == reference.cdc_cuts(
        data, min_size, avg_size, max_size, final=True
    )


@pytest.mark.parametrize("seed", range(10))
def test_prefix_cuts_are_a_prefix_of_the_whole_cuts(seed):
    """What a non-final call decides never changes when more data arrives: the base of streaming."""
    rnd = random.Random(2000 + seed)
    min_size, avg_size, max_size = 256, 1024, 4096
    data = rnd.randbytes(50_000)
    whole = cdc_cuts(data, min_size, avg_size, max_size, final=True)
    for _ in range(20):
        end = rnd.randrange(len(data) + 1)
        part = cdc_cuts(data[:end], min_size, avg_size, max_size)
        assert part == whole[: len(part)]
        # Nothing that could have been decided is left out.
        rest = whole[len(part)] if len(part) < len(whole) else len(data)
        assert rest > end or rest == len(data)


def test_chunk_sizes_stay_within_bounds():
    data = random.Random(5).randbytes(2_000_000)
    cuts = cdc_cuts(data, 1024, 4096, 16384, final=True)
    sizes = [end - start for start, end in zip([0, *cuts], cuts)]
    assert all(1024 <= size <= 16384 for size in sizes[:-1])
    assert 1 <= sizes[-1] <= 16384
    # Normalised chunking keeps the mean near avg + min (the min-size skip adds min on average).
    assert 4096 <= len(data) / len(cuts) <= 4096 + 2 * 1024
