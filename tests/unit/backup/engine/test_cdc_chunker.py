"""CdcChunker: any split of a stream gives the same chunks as cutting it whole, with a bounded carry."""
from __future__ import annotations

import itertools
import random

import pytest

from cbr_backup.engine import CdcChunker, cdc_cuts

MIN, AVG, MAX = 512, 2048, 8192
DATA = random.Random(11).randbytes(120_000)
WHOLE = cdc_cuts(DATA, MIN, AVG, MAX, final=True)


def run(chunker: CdcChunker, pieces) -> list[bytes]:
    chunks: list[bytes] = []
    for piece in pieces:
        chunks += [bytes(chunk) for chunk in chunker.feed(piece)]
        assert chunker.pending_bytes < MAX
    chunks += [bytes(chunk) for chunk in chunker.finish()]
    assert chunker.pending_bytes == 0
    return chunks


def split_fixed(data: bytes, size: int):
    return [data[start : start + size] for start in range(0, len(data), size)]


def split_cycle(data: bytes, sizes):
    pieces, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= len(data):
            return pieces
        pieces.append(data[start : start + size])
        start += size


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(split_fixed(DATA[:20_000], 1), id="1-byte"),
        pytest.param(split_cycle(DATA, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 997, 7919]), id="primes"),
        *(
            pytest.param(split_fixed(DATA, size), id=f"fixed-{size}")
            for size in (MIN - 1, MIN, MIN + 1, AVG, MAX - 1, MAX, MAX + 1, 2 * MAX + 3, 65_536, len(DATA))
        ),
        pytest.param(split_cycle(DATA, [0, MAX + 1, 0, 1, MIN - 1]), id="with-empty-feeds"),
    ],
)
def test_any_split_reassembles_to_the_same_chunks(pieces):
    data = b"".join(pieces)
    chunks = run(CdcChunker(MIN, AVG, MAX), pieces)
    assert b"".join(chunks) == data
    assert list(itertools.accumulate(map(len, chunks))) == cdc_cuts(data, MIN, AVG, MAX, final=True)


def test_random_splits():
    rnd = random.Random(4)
    for _ in range(20):
        pieces, start = [], 0
        while start < len(DATA):
            size = rnd.choice(
                [rnd.randrange(0, 64), rnd.randrange(MIN - 2, MIN + 3), rnd.randrange(MAX - 2, MAX + 3),
                 rnd.randrange(1, 3 * MAX)]
            )
            pieces.append(DATA[start : start + size])
            start += size
        chunks = run(CdcChunker(MIN, AVG, MAX), pieces)
        assert list(itertools.accumulate(map(len, chunks))) == WHOLE


def test_feeding_from_a_reused_buffer():
    chunker = CdcChunker(MIN, AVG, MAX)
    buffer = bytearray(10_000)
    chunks: list[bytes] = []
    for start in range(0, len(DATA), len(buffer)):
        piece = DATA[start : start + len(buffer)]
        view = memoryview(buffer)[: len(piece)]
        view[:] = piece
        chunks += [bytes(chunk) for chunk in chunker.feed(view)]  # consumed before the buffer is reused
        view.release()
    chunks += [bytes(chunk) for chunk in chunker.finish()]
    assert b"".join(chunks) == DATA
    assert list(itertools.accumulate(map(len, chunks))) == WHOLE


def test_exact_size_buffers(exact_size):
    pieces = [exact_size(piece) for piece in split_cycle(DATA, [1, MIN - 1, MAX + 1, 3 * MAX])]
    chunks = run(CdcChunker(MIN, AVG, MAX), pieces)
    assert list(itertools.accumulate(map(len, chunks))) == WHOLE


def test_non_byte_memoryview_is_cut_as_bytes():
    chunks = run(CdcChunker(MIN, AVG, MAX), [memoryview(DATA[:40_000]).cast("I"), DATA[40_000:]])
    assert list(itertools.accumulate(map(len, chunks))) == WHOLE


def test_empty_stream():
    assert run(CdcChunker(MIN, AVG, MAX), []) == []
    assert run(CdcChunker(MIN, AVG, MAX), [b"", b""]) == []


def test_short_stream_is_one_chunk():
    assert run(CdcChunker(MIN, AVG, MAX), [b"a", b"bc"]) == [b"abc"]


def test_chunker_is_reusable_after_finish():
    chunker = CdcChunker(MIN, AVG, MAX)
    first = run(chunker, split_fixed(DATA, 5000))
    second = run(chunker, split_fixed(DATA, 3000))
    assert first == second


def test_all_zero_stream_is_cut_at_max():
    chunks = run(CdcChunker(MIN, AVG, MAX), split_fixed(bytes(5 * MAX + 7), 1000))
    assert list(map(len, chunks)) == [MAX] * 5 + [7]


@pytest.mark.parametrize("sizes", [(63, 128, 256), (512, 256, 1024), (64, 128, 100), (64, 128, (64 << 20) + 1)])
def test_bad_sizes_raise_value_error(sizes):
    with pytest.raises(ValueError):
        CdcChunker(*sizes)
