"""The engine's buffer helpers: copy_into (large copies without the GIL) and unfilled_bytearray."""
from __future__ import annotations

import mmap
import os
import threading

import pytest

from cbr_backup.engine import copy_into, unfilled_bytearray


@pytest.mark.parametrize("size", [0, 1, 100, (16 << 10) - 1, 16 << 10, 200_000])
def test_copy_into_writes_exactly_the_source_at_the_offset(size):
    src = os.urandom(size)
    dst = bytearray(b"\xee") * (size + 20)
    copy_into(dst, 7, src)
    assert dst[:7] == b"\xee" * 7 and dst[7:7 + size] == src and dst[7 + size:] == b"\xee" * 13


def test_copy_into_a_mapping_from_a_view():
    mapped = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    src = bytearray(os.urandom(300_000))
    copy_into(mapped, 4096, memoryview(src)[1000:])
    assert mapped[4096:4096 + 299_000] == src[1000:]


@pytest.mark.parametrize("offset,size", [(-1, 1), (11, 0), (10, 1), (0, 11)])
def test_copy_into_refuses_what_does_not_fit_and_writes_nothing(offset, size):
    dst = bytearray(10)
    with pytest.raises(ValueError, match="do not fit"):
        copy_into(dst, offset, b"x" * size)
    assert dst == bytearray(10)


def test_copy_into_needs_a_writable_target():
    with pytest.raises(TypeError):
        copy_into(b"\0" * 10, 0, b"x")


def test_copies_from_two_threads_into_one_mapping_land_where_sent():
    """Large copies run without the GIL, so two threads copy at once: every copy lands where it was sent."""
    mapped = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pieces = [os.urandom(1 << 20) for _ in range(8)]

    def copy(first):
        for round_ in range(4):
            for i in range(first, 8, 2):
                copy_into(mapped, (round_ * 8 + i) << 20, pieces[i])
    threads = [threading.Thread(target=copy, args=(n,)) for n in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for round_ in range(4):
        for i in range(8):
            at = (round_ * 8 + i) << 20
            assert mapped[at:at + (1 << 20)] == pieces[i]


def test_unfilled_bytearray_has_the_size_asked():
    assert len(unfilled_bytearray(0)) == 0 and len(unfilled_bytearray(131_085)) == 131_085
    with pytest.raises(ValueError):
        unfilled_bytearray(-1)
