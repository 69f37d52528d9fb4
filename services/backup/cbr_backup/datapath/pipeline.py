"""The bounded read-and-process pipeline shared by backup and restore.

A disk is cut into pieces of up to one buffer (whole blocks, following the allocated-extent map, so holes
are never read). For each piece the calling thread takes a buffer from a fixed pool and hands both to a
small thread pool (`work`: direct reads, zero scan, hashing, compression, chunk store I/O; all of them
release the GIL, and several reads in flight keep the device busier than one reader thread). Taking a
buffer blocks while `depth` of them are in flight: that is the backpressure, and memory is
depth x buffer_size whatever the disk size.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from cbr_backup.datapath.blockio import AlignedBuffer, BufferPool

DEFAULT_BUFFER_SIZE = 8 << 20


def piece_size_for(disk, asked: int | None = None) -> int:
    """The piece (buffer) size for a disk: asked, else the device's own (an RBD object), else the default."""
    return asked or getattr(disk, "piece_size", None) or DEFAULT_BUFFER_SIZE


def default_workers() -> int:
    """Two to four: enough to keep every core busy while one thread waits on I/O, few enough to stay lean."""
    return max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class Piece:
    """Blocks [first_block, first_block + block_count) at byte offset, length bytes (short at the disk's end)."""
    first_block: int
    block_count: int
    offset: int
    length: int


def plan_pieces(block_ranges: Iterable[tuple[int, int]], block_size: int, disk_size: int,
                buffer_size: int) -> Iterator[Piece]:
    """Splits [first, end) block ranges into pieces of at most buffer_size bytes."""
    per_piece = max(1, buffer_size // block_size)
    for first, end in block_ranges:
        for start in range(first, end, per_piece):
            count = min(per_piece, end - start)
            offset = start * block_size
            yield Piece(start, count, offset, min(count * block_size, disk_size - offset))


def subtract_ranges(ranges: list[tuple[int, int]], removed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """ranges minus removed (both sorted lists of [first, end) block ranges)."""
    out: list[tuple[int, int]] = []
    j = 0
    for first, end in ranges:
        start = first
        while j < len(removed) and removed[j][1] <= start:
            j += 1
        k = j
        while k < len(removed) and removed[k][0] < end:
            if removed[k][0] > start:
                out.append((start, removed[k][0]))
            start = max(start, removed[k][1])
            k += 1
        if start < end:
            out.append((start, end))
    return out


def run_pipeline(pieces: Iterable[Piece], work: Callable[[Piece, AlignedBuffer], None], *,
                 workers: int | None = None, buffer_size: int = DEFAULT_BUFFER_SIZE,
                 depth: int | None = None) -> None:
    """Runs work(piece, buffer) for every piece on a thread pool, with at most depth buffers in flight
    (default workers + 1). A buffer holds whatever the previous piece left in it. The first exception
    stops the run and is raised."""
    workers = workers or default_workers()
    depth = depth or workers + 1
    pool = BufferPool(depth, buffer_size)
    pending: set[Future] = set()
    executor = ThreadPoolExecutor(workers, thread_name_prefix="cbr-datapath")
    try:
        for piece in pieces:
            buffer = pool.take()  # blocks while depth buffers are in flight
            future = executor.submit(work, piece, buffer)
            future.add_done_callback(lambda _f, b=buffer: pool.give_back(b))
            pending.add(future)
            pending = _settle(pending, block=False)  # a failed piece stops the reading early
        while pending:
            pending = _settle(pending, block=True)
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        pool.close()


def _settle(pending: set[Future], block: bool) -> set[Future]:
    """Drops finished futures, raising the first failure; with block, waits for one to finish or fail."""
    if block:
        done, rest = wait(pending, return_when=FIRST_EXCEPTION)
    else:
        done = {f for f in pending if f.done()}
        rest = pending - done
    for future in done:
        exc = future.exception()
        if exc is not None:
            raise exc
    return rest
