"""FastCDC edge cases: tiny and boundary-sized inputs, uniform data, buffer types and bad arguments."""
from __future__ import annotations

import mmap
import random
import threading

import pytest

from cbr_backup.engine import MAX_CHUNK_SIZE, cdc_cuts
from cbr_backup.engine import reference

MIN, AVG, MAX = 256, 1024, 4096


def test_empty_input():
    assert cdc_cuts(b"", MIN, AVG, MAX) == []
    assert cdc_cuts(b"", MIN, AVG, MAX, final=True) == []


def test_one_byte():
    assert cdc_cuts(b"x", MIN, AVG, MAX) == []
    assert cdc_cuts(b"x", MIN, AVG, MAX, final=True) == [1]


@pytest.mark.parametrize("size", [MIN - 1, MIN, MIN + 1, AVG - 1, AVG, AVG + 1, MAX - 1, MAX, MAX + 1, 2 * MAX + 1])
@pytest.mark.parametrize("fill", ["zero", "random"])
def test_sizes_around_the_limits(size, fill):
    data = bytes(size) if fill == "zero" else random.Random(size).randbytes(size)
    for final in (False, True):
        cuts = cdc_cuts(data, MIN, AVG, MAX, final)
        assert cuts == reference.cdc_cuts(data, MIN, AVG, MAX, final)
        if final:
            assert cuts[-1] == size
        if size <= MIN:
            assert cuts == ([size] if final else [])


@pytest.mark.parametrize("size", [1, 63, 64, 65, MIN - 1, MIN, MIN + 1, AVG, MAX - 1, MAX, MAX + 1, 3 * MAX + 17])
def test_exact_size_buffers(size, exact_size):
    for data in (bytes(size), random.Random(size).randbytes(size)):
        for final in (False, True):
            assert cdc_cuts(exact_size(data), MIN, AVG, MAX, final) == reference.cdc_cuts(data, MIN, AVG, MAX, final)


def test_all_zero_input_is_cut_at_max():
    data = bytes(10 * MAX + 123)
    assert cdc_cuts(data, MIN, AVG, MAX, final=True) == [*range(MAX, 10 * MAX + 1, MAX), 10 * MAX + 123]
    assert cdc_cuts(data, MIN, AVG, MAX) == list(range(MAX, 10 * MAX + 1, MAX))


def test_input_shorter_than_max_without_a_cut_point_waits_for_more():
    data = bytes(MAX - 1)
    assert cdc_cuts(data, MIN, AVG, MAX) == []
    assert cdc_cuts(data, MIN, AVG, MAX, final=True) == [MAX - 1]


def test_min_equal_to_max_gives_fixed_size_chunks():
    data = random.Random(1).randbytes(1000)
    assert cdc_cuts(data, 100, 100, 100, final=True) == [*range(100, 1001, 100)]
    assert cdc_cuts(data[:950], 100, 100, 100, final=True)[-2:] == [900, 950]


def test_many_cuts_span_several_batches_of_the_binding():
    data = bytes(64 * 10_000 + 5)  # 10 001 chunks with min = avg = max = 64, more than one batch of 4096
    cuts = cdc_cuts(data, 64, 64, 64, final=True)
    assert cuts == [*range(64, 64 * 10_000 + 1, 64), 64 * 10_000 + 5]


def test_buffer_types_give_the_same_cuts():
    data = random.Random(9).randbytes(20_000)
    expected = cdc_cuts(data, MIN, AVG, MAX, final=True)
    assert cdc_cuts(bytearray(data), MIN, AVG, MAX, final=True) == expected
    assert cdc_cuts(memoryview(data), MIN, AVG, MAX, final=True) == expected
    assert cdc_cuts(memoryview(b"pad" + data)[3:], MIN, AVG, MAX, final=True) == expected  # unaligned start
    assert cdc_cuts(memoryview(data).cast("I"), MIN, AVG, MAX, final=True) == expected
    with mmap.mmap(-1, len(data)) as mapped:
        mapped.write(data)
        assert cdc_cuts(mapped, MIN, AVG, MAX, final=True) == expected


def test_keyword_arguments():
    data = random.Random(2).randbytes(5000)
    assert cdc_cuts(buf=data, min_size=MIN, avg_size=AVG, max_size=MAX, final=True) == cdc_cuts(
        data, MIN, AVG, MAX, True
    )


def test_concurrent_calls_agree_with_serial_ones():
    """The binding releases the GIL; calls from several threads must not share any state."""
    buffers = [random.Random(seed).randbytes(300_000) for seed in range(4)]
    expected = [cdc_cuts(buf, MIN, AVG, MAX, final=True) for buf in buffers]
    results: list[list[int] | None] = [None] * len(buffers)

    def run(index: int) -> None:
        for _ in range(3):
            results[index] = cdc_cuts(buffers[index], MIN, AVG, MAX, final=True)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(buffers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected


@pytest.mark.parametrize(
    "sizes",
    [
        (63, 1024, 4096),  # min below 64
        (0, 1024, 4096),
        (-1, 1024, 4096),
        (2048, 1024, 4096),  # min > avg
        (256, 8192, 4096),  # avg > max
        (256, 1024, MAX_CHUNK_SIZE + 1),  # max above 64 MiB
    ],
)
def test_bad_sizes_raise_value_error(sizes):
    with pytest.raises(ValueError):
        cdc_cuts(b"data", *sizes)
    with pytest.raises(ValueError):
        reference.cdc_cuts(b"data", *sizes)


def test_largest_sizes_are_accepted():
    data = random.Random(3).randbytes(3000)
    for sizes in [(64, 64, MAX_CHUNK_SIZE), (64, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE)]:
        assert cdc_cuts(data, *sizes, final=True) == reference.cdc_cuts(data, *sizes, final=True)
    assert cdc_cuts(b"x" * 100, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, final=True) == [100]


def test_non_buffer_raises_type_error():
    with pytest.raises(TypeError):
        cdc_cuts("text", MIN, AVG, MAX)
    with pytest.raises(TypeError):
        cdc_cuts([1, 2, 3], MIN, AVG, MAX)
