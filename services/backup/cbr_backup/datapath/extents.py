"""Where a disk file holds data: allocated extents (SEEK_DATA / SEEK_HOLE), and, through FIEMAP, which blocks
still share their physical extents with the previous snapshot.

Sharing is a capability, not a promise. Two snapshots taken as reflink clones (btrfs, XFS with reflink) keep
the physical extents of every block the disk did not write in between: a block mapped to the same physical
address at the same offset in both, flagged FIEMAP_EXTENT_SHARED, holds the same bytes, so its id can come
from the previous manifest without reading it. Without reflinks (ext4, or a snapshot taken by copying) two
files never share extents and nothing can be concluded: `changed_since` is then never called (the caller
passes no previous snapshot) and every allocated block is read.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
# Flags under which the physical address does not identify the bytes (unknown, delayed allocation, encoded
# or encrypted or inline or tail-packed data, not block aligned): such extents never count as shared.
FIEMAP_UNTRUSTED = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400

_FIEMAP_HEADER = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")
_FIEMAP_BATCH = 256


def data_extents(fd: int, size: int | None = None) -> list[tuple[int, int]]:
    """(start, end) byte ranges that may hold data, in order; holes between them read as zeros.

    Falls back to one extent covering the file where the file system cannot tell holes apart."""
    if size is None:
        size = os.fstat(fd).st_size
    extents: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size)] if size else []
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end))
        offset = end
    return extents


def block_ranges(extents: list[tuple[int, int]], block_size: int) -> list[tuple[int, int]]:
    """The [first, end) block ranges touching the byte extents, merged where they meet."""
    ranges: list[tuple[int, int]] = []
    for start, end in extents:
        first, last = start // block_size, -(-end // block_size)
        if ranges and first <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], last))
        else:
            ranges.append((first, last))
    return ranges


@dataclass(frozen=True)
class PhysicalExtent:
    logical: int
    physical: int
    length: int
    flags: int


def fiemap(fd: int) -> list[PhysicalExtent] | None:
    """The file's extent map, or None where the file system has no FIEMAP."""
    extents: list[PhysicalExtent] = []
    start = 0
    request = bytearray(_FIEMAP_HEADER.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
    while True:
        _FIEMAP_HEADER.pack_into(request, 0, start, 0xFFFF_FFFF_FFFF_FFFF - start, FIEMAP_FLAG_SYNC, 0,
                                 _FIEMAP_BATCH, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, request, True)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS):
                return None
            raise
        mapped = _FIEMAP_HEADER.unpack_from(request, 0)[3]
        if mapped == 0:
            return extents
        for i in range(mapped):
            logical, physical, length, flags = _FIEMAP_EXTENT.unpack_from(
                request, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size)
            extents.append(PhysicalExtent(logical, physical, length, flags))
        last = extents[-1]
        if last.flags & FIEMAP_EXTENT_LAST:
            return extents
        start = last.logical + last.length


def shared_byte_ranges(current: list[PhysicalExtent], previous: list[PhysicalExtent]) -> list[tuple[int, int]]:
    """Byte ranges that both maps place at the same physical address, both flagged shared and trusted."""
    def usable(extents):
        return [e for e in extents if e.flags & FIEMAP_EXTENT_SHARED and not e.flags & FIEMAP_UNTRUSTED]

    cur, prev = usable(current), usable(previous)
    ranges: list[tuple[int, int]] = []
    i = j = 0
    while i < len(cur) and j < len(prev):
        a, b = cur[i], prev[j]
        start = max(a.logical, b.logical)
        end = min(a.logical + a.length, b.logical + b.length)
        if start < end and a.physical - a.logical == b.physical - b.logical:
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], end)
            else:
                ranges.append((start, end))
        if a.logical + a.length <= b.logical + b.length:
            i += 1
        else:
            j += 1
    return ranges


def changed_since(current_fd: int, previous_fd: int, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges of current that may differ from previous: all but the extents they share (both clones);
    None if the file system has no FIEMAP. Holes share nothing, so they count as changed (a hole in both
    included): the backup reads only the allocated part of a change and zeroes the rest."""
    current, previous = fiemap(current_fd), fiemap(previous_fd)
    if current is None or previous is None:
        return None
    return complement(shared_byte_ranges(current, previous), size)


def complement(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The parts of [0, size) outside the sorted ranges."""
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, end in ranges:
        if start > pos:
            gaps.append((pos, min(start, size)))
        pos = max(pos, end)
        if pos >= size:
            break
    if pos < size:
        gaps.append((pos, size))
    return [(s, e) for s, e in gaps if s < e]


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The byte ranges sorted, with overlapping and touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif start < end:
            out.append((start, end))
    return out


def intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts common to two sorted lists of disjoint byte ranges."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def spans_by_block(ranges: list[tuple[int, int]], block_size: int, size: int,
                   align: int = 1) -> dict[int, list[tuple[int, int]]]:
    """Sorted disjoint byte ranges cut at block boundaries: {block: [(start, end) within the block]}, each span
    widened to multiples of align (never past the disk's end) and joined where they then meet."""
    out: dict[int, list[tuple[int, int]]] = {}
    for start, end in ranges:
        end = min(end, size)
        for i in range(start // block_size, -(-end // block_size)):
            base = i * block_size
            s = max(start - base, 0) // align * align
            e = min(-(-min(end - base, block_size) // align) * align, size - base)
            held = out.setdefault(i, [])
            if held and s <= held[-1][1]:
                held[-1] = (held[-1][0], max(held[-1][1], e))
            else:
                held.append((s, e))
    return out


def unchanged_blocks(changed: list[tuple[int, int]], block_size: int, size: int) -> list[tuple[int, int]]:
    """[first, end) ranges of whole blocks (the last one may be short, ending at size) outside every changed
    byte range: what a provider's changed extents say holds what the base held."""
    blocks: list[tuple[int, int]] = []
    for start, end in complement(sorted(changed), size):
        first = -(-start // block_size)
        last = end // block_size if end < size else -(-size // block_size)
        if first < last:
            blocks.append((first, last))
    return blocks


def exclusive_bytes(fd: int) -> int:
    """Bytes of the file's extents that no other file shares: the space it alone holds (all of its data
    where there is no FIEMAP)."""
    extents = fiemap(fd)
    if extents is None:
        return sum(end - start for start, end in data_extents(fd))
    return sum(e.length for e in extents if not e.flags & FIEMAP_EXTENT_SHARED)
