"""The disk manifest: a disk image as one chunk id per fixed-size block, with runs of zero blocks elided.

Binary form (little endian; DESIGN.md "Disk manifest"):

    header  magic "CBRDMF\\r\\n" | version u16 (1, or 2 with patched blocks) | flags u16 (=0) | block_size u32
            | disk_size u64 | block_count u64                                           (32 bytes)
    runs    repeated: kind u8 | count u32, then for kind 1 (data) count x 32-byte chunk ids;
            kind 0 (zero) has no payload: count blocks that are all zero or holes;
            kind 2 (patched, version 2) count x (block id | base chunk id | patch chunk id | page map)
    trailer BLAKE3-256 (unkeyed) of every byte before it                                 (32 bytes)

block_count = ceil(disk_size / block_size); the last block may be short (disk_size - (n-1) * block_size
bytes) and its id is that of the short plaintext. Runs are maximal, except that no run exceeds 2^32-1 blocks.
A patched block (DESIGN.md 3.1) is its base chunk with the 4 KiB pages its page map names replaced, in order, by
the patch chunk's plaintext; its id is still the id of the whole block's plaintext.
"""
from __future__ import annotations

import bisect
import hmac
import re
import struct
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import blake3

from cbr_backup.datapath.errors import ManifestCorruptError

MAGIC = b"CBRDMF\r\n"
VERSION = 1
VERSION_PATCHED = 2  # written only when the manifest has patched blocks
ID_SIZE = 32
RUN_ZERO = 0
RUN_DATA = 1
RUN_PATCHED = 2
PAGE_SIZE = 4096  # a patch's unit
MAX_RUN = 0xFFFF_FFFF
MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 16 << 20

_HEADER = struct.Struct("<8sHHIQQ")
_RUN = struct.Struct("<BI")
_CHECKSUM_SIZE = 32
_ZERO_ID = bytes(ID_SIZE)
_RUNS_RE = re.compile(rb"\x01+|[^\x01]+", re.S)


def check_block_size(block_size: int) -> int:
    if not (MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE) or block_size % MIN_BLOCK_SIZE:
        raise ValueError(f"block size must be a multiple of {MIN_BLOCK_SIZE} between {MIN_BLOCK_SIZE} and "
                         f"{MAX_BLOCK_SIZE}, not {block_size}")
    return block_size


class Patch(NamedTuple):
    """A block stored as its base chunk (an earlier backup's whole block) and a patch chunk holding the pages
    that differ, in order: bit p of pages (little endian within each byte) set for each replaced page."""
    base: bytes
    chunk: bytes
    pages: bytes


def page_map_size(block_size: int) -> int:
    return -(-(block_size // PAGE_SIZE) // 8)


def patched_pages(pages: bytes, length: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte ranges within a block of length bytes of the pages a page map names."""
    for p in range(-(-length // PAGE_SIZE)):
        if pages[p >> 3] >> (p & 7) & 1:
            yield p * PAGE_SIZE, min(length, (p + 1) * PAGE_SIZE)


def patched_entries(manifest: "DiskManifest", first: int, count: int) -> bytes:
    """The encoded entries of patched blocks first .. first + count - 1 (manifest run kind 2, delta op PATCHED)."""
    ids = manifest.ids
    return b"".join(ids[i * ID_SIZE:(i + 1) * ID_SIZE] + manifest.patches[i].base + manifest.patches[i].chunk
                    + manifest.patches[i].pages for i in range(first, first + count))


def read_patched_entries(data, position: int, index: int, count: int, block_size: int, ids: bytearray,
                         patches: dict) -> int | None:
    """Reads count patched entries from data at position into ids and patches (blocks index ..); the position
    after them, or None if data is too short."""
    entry = 3 * ID_SIZE + page_map_size(block_size)
    if position + count * entry > len(data):
        return None
    for i in range(index, index + count):
        at = position + ID_SIZE
        ids[i * ID_SIZE:(i + 1) * ID_SIZE] = data[position:at]
        patches[i] = Patch(bytes(data[at:at + ID_SIZE]), bytes(data[at + ID_SIZE:at + 2 * ID_SIZE]),
                           bytes(data[at + 2 * ID_SIZE:position + entry]))
        position += entry
    return position


def patch_length(pages: bytes, length: int) -> int:
    """The raw size of the patch chunk of a block of length bytes."""
    return sum(end - start for start, end in patched_pages(pages, length))


@dataclass(frozen=True)
class DiskManifest:
    """ids holds 32 bytes per block (zero bytes where the block is zero); zero holds one byte per block,
    1 for an all-zero block. Flat byte strings instead of per-block objects: a 1 TiB disk at 64 KiB is
    16 Mi blocks, 528 MiB here but several GiB as Python objects. patches: block index -> Patch for the few
    blocks an incremental backup stored as a patch of their earlier content (their ids stay the blocks' ids)."""
    disk_size: int
    block_size: int
    ids: bytes
    zero: bytes
    patches: dict[int, Patch] = field(default_factory=dict)

    def __post_init__(self):
        n = block_count(self.disk_size, self.block_size)
        if len(self.zero) != n or len(self.ids) != n * ID_SIZE:
            raise ValueError(f"a manifest of {n} blocks needs {n} zero flags and {n * ID_SIZE} id bytes")
        size = page_map_size(self.block_size)
        for i, patch in self.patches.items():
            # a page map names at least one page and no page past the block's end: one manifest, one encoding
            named = int.from_bytes(patch.pages, "little")
            if not 0 <= i < n or self.zero[i] or len(patch.pages) != size or not named \
                    or named >> -(-self.block_length(i) // PAGE_SIZE):
                raise ValueError(f"block {i} cannot be patched as given")

    @property
    def block_count(self) -> int:
        return len(self.zero)

    def block_length(self, index: int) -> int:
        return min(self.block_size, self.disk_size - index * self.block_size)

    def block_id(self, index: int) -> bytes | None:
        """The id of block index's plaintext, or None for an all-zero block. It is also the block's chunk
        unless the block is patched (patch_of)."""
        if self.zero[index]:
            return None
        return self.ids[index * ID_SIZE:(index + 1) * ID_SIZE]

    def patch_of(self, index: int) -> Patch | None:
        return self.patches.get(index) if self.patches else None

    def block_chunks(self, index: int) -> list[tuple[bytes, int]]:
        """(chunk id, raw size) of the chunks block index is made of: none, its own, or its base and patch."""
        if self.zero[index]:
            return []
        patch, length = self.patch_of(index), self.block_length(index)
        if patch is None:
            return [(self.ids[index * ID_SIZE:(index + 1) * ID_SIZE], length)]
        return [(patch.base, length), (patch.chunk, patch_length(patch.pages, length))]

    def patched_blocks(self) -> dict[tuple[bytes, Patch], int]:
        """(block id, its patch) -> its length for every patched block (what verify puts together and checks)."""
        return {(self.ids[i * ID_SIZE:(i + 1) * ID_SIZE], patch): self.block_length(i)
                for i, patch in self.patches.items()}

    def data_blocks(self) -> Iterator[tuple[int, bytes]]:
        """(index, id) of every non-zero block, in order."""
        ids, size = self.ids, ID_SIZE
        for match in _RUNS_RE.finditer(self.zero):
            if match.group()[0] != 1:
                for index in range(match.start(), match.end()):
                    yield index, ids[index * size:(index + 1) * size]

    def chunk_sizes(self) -> dict[bytes, int]:
        """id -> raw size of every chunk the manifest references (what GC keeps, verify checks and a replica
        needs): data blocks' own chunks, patched blocks' bases and patches."""
        patches = self.patches
        sizes = {chunk: self.block_length(i) for i, chunk in self.data_blocks() if not patches or i not in patches}
        for i in patches:
            sizes.update(self.block_chunks(i))
        return sizes

    def unique_ids(self) -> set[bytes]:
        """The chunks the manifest references."""
        if not self.patches:
            return {chunk for _, chunk in self.data_blocks()}
        return set(self.chunk_sizes())

    @property
    def data_block_count(self) -> int:
        return self.block_count - self.zero.count(1)

    @property
    def data_bytes(self) -> int:
        """Bytes of the image that are data: holes and all-zero blocks left out (the short last block counted
        at its length)."""
        full = self.data_block_count * self.block_size
        last = self.block_count - 1
        if self.block_count and not self.zero[last]:
            full -= self.block_size - self.block_length(last)
        return full

    def encode(self) -> bytes:
        version = VERSION_PATCHED if self.patches else VERSION
        out = bytearray(_HEADER.pack(MAGIC, version, 0, self.block_size, self.disk_size, self.block_count))
        for kind, start, end in self.runs():
            for first in range(start, end, MAX_RUN):
                count = min(MAX_RUN, end - first)
                out += _RUN.pack(kind, count)
                if kind == RUN_DATA:
                    out += self.ids[first * ID_SIZE:(first + count) * ID_SIZE]
                elif kind == RUN_PATCHED:
                    out += patched_entries(self, first, count)
        out += blake3.blake3(out).digest()
        return bytes(out)

    def runs(self) -> Iterator[tuple[int, int, int]]:
        """(kind, start, end) of the maximal runs of zero, data and patched blocks, in order."""
        patched = sorted(self.patches)
        for match in _RUNS_RE.finditer(self.zero):
            start, end = match.span()
            if match.group()[0] == 1:
                yield RUN_ZERO, start, end
                continue
            at = start
            inside = patched[bisect.bisect_left(patched, start):bisect.bisect_left(patched, end)]
            k = 0
            while k < len(inside):
                first = last = inside[k]
                while k + 1 < len(inside) and inside[k + 1] == last + 1:
                    k += 1
                    last = inside[k]
                if first > at:
                    yield RUN_DATA, at, first
                yield RUN_PATCHED, first, last + 1
                at, k = last + 1, k + 1
            if at < end:
                yield RUN_DATA, at, end

    @classmethod
    def decode(cls, data: bytes) -> "DiskManifest":
        """Parses and checks an encoded manifest; ManifestCorruptError on any defect."""
        view = memoryview(data)
        if len(view) < _HEADER.size + _CHECKSUM_SIZE:
            raise ManifestCorruptError("manifest is truncated")
        body, checksum = view[:-_CHECKSUM_SIZE], view[-_CHECKSUM_SIZE:]
        if not hmac.compare_digest(blake3.blake3(body).digest(), checksum):
            raise ManifestCorruptError("manifest checksum mismatch")
        magic, version, flags, block_size, disk_size, count = _HEADER.unpack_from(body)
        if magic != MAGIC:
            raise ManifestCorruptError("not a disk manifest")
        if version not in (VERSION, VERSION_PATCHED) or flags != 0:
            raise ManifestCorruptError(f"unsupported disk manifest version {version} (flags {flags:#x})")
        try:
            check_block_size(block_size)
        except ValueError as exc:
            raise ManifestCorruptError(str(exc)) from None
        if count != block_count(disk_size, block_size):
            raise ManifestCorruptError("block count does not match disk and block size")
        ids = bytearray(count * ID_SIZE)
        zero = bytearray(b"\x01") * count
        patches: dict[int, Patch] = {}
        position, index = _HEADER.size, 0
        end = len(body)
        while position < end:
            if position + _RUN.size > end:
                raise ManifestCorruptError("truncated run header")
            kind, run = _RUN.unpack_from(body, position)
            position += _RUN.size
            if run == 0 or index + run > count:
                raise ManifestCorruptError("run overflows the block count")
            if kind == RUN_DATA:
                length = run * ID_SIZE
                if position + length > end:
                    raise ManifestCorruptError("truncated data run")
                ids[index * ID_SIZE:(index + run) * ID_SIZE] = body[position:position + length]
                zero[index:index + run] = bytes(run)
                position += length
            elif kind == RUN_PATCHED and version == VERSION_PATCHED:
                position = read_patched_entries(body, position, index, run, block_size, ids, patches)
                if position is None:
                    raise ManifestCorruptError("truncated patched run")
                zero[index:index + run] = bytes(run)
            elif kind != RUN_ZERO:
                raise ManifestCorruptError(f"unknown run kind {kind}")
            index += run
        if index != count:
            raise ManifestCorruptError("runs do not cover the disk")
        if version == VERSION_PATCHED and not patches:
            raise ManifestCorruptError("a version 2 manifest without patched blocks")
        try:
            return cls(disk_size, block_size, bytes(ids), bytes(zero), patches)
        except ValueError as exc:
            raise ManifestCorruptError(str(exc)) from None


def block_count(disk_size: int, block_size: int) -> int:
    return -(-disk_size // block_size)


def empty_manifest(disk_size: int, block_size: int) -> DiskManifest:
    """A manifest of a disk that is all zeros."""
    n = block_count(disk_size, block_size)
    return DiskManifest(disk_size, block_size, bytes(n * ID_SIZE), b"\x01" * n)
