"""The disk manifest: a disk image as one chunk id per fixed-size block, with runs of zero blocks elided.

Binary form (little endian; DESIGN.md "Disk manifest"):

    header  magic "CBRDMF\\r\\n" | version u16 (=1) | flags u16 (=0) | block_size u32 | disk_size u64
            | block_count u64                                                            (32 bytes)
    runs    repeated: kind u8 | count u32, then for kind 1 (data) count x 32-byte chunk ids;
            kind 0 (zero) has no payload: count blocks that are all zero or holes
    trailer BLAKE3-256 (unkeyed) of every byte before it                                 (32 bytes)

block_count = ceil(disk_size / block_size); the last block may be short (disk_size - (n-1) * block_size
bytes) and its id is that of the short plaintext. Runs are maximal, except that no run exceeds 2^32-1 blocks.
"""
from __future__ import annotations

import hmac
import re
import struct
from dataclasses import dataclass
from typing import Iterator

import blake3

from cbr_backup.datapath.errors import ManifestCorruptError

MAGIC = b"CBRDMF\r\n"
VERSION = 1
ID_SIZE = 32
RUN_ZERO = 0
RUN_DATA = 1
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


@dataclass(frozen=True)
class DiskManifest:
    """ids holds 32 bytes per block (zero bytes where the block is zero); zero holds one byte per block,
    1 for an all-zero block. Flat byte strings instead of per-block objects: a 1 TiB disk at 64 KiB is
    16 Mi blocks, 528 MiB here but several GiB as Python objects."""
    disk_size: int
    block_size: int
    ids: bytes
    zero: bytes

    def __post_init__(self):
        n = block_count(self.disk_size, self.block_size)
        if len(self.zero) != n or len(self.ids) != n * ID_SIZE:
            raise ValueError(f"a manifest of {n} blocks needs {n} zero flags and {n * ID_SIZE} id bytes")

    @property
    def block_count(self) -> int:
        return len(self.zero)

    def block_length(self, index: int) -> int:
        return min(self.block_size, self.disk_size - index * self.block_size)

    def block_id(self, index: int) -> bytes | None:
        """The chunk id of block index, or None for an all-zero block."""
        if self.zero[index]:
            return None
        return self.ids[index * ID_SIZE:(index + 1) * ID_SIZE]

    def data_blocks(self) -> Iterator[tuple[int, bytes]]:
        """(index, id) of every non-zero block, in order."""
        ids, size = self.ids, ID_SIZE
        for match in _RUNS_RE.finditer(self.zero):
            if match.group()[0] != 1:
                for index in range(match.start(), match.end()):
                    yield index, ids[index * size:(index + 1) * size]

    def unique_ids(self) -> set[bytes]:
        return {chunk for _, chunk in self.data_blocks()}

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
        out = bytearray(_HEADER.pack(MAGIC, VERSION, 0, self.block_size, self.disk_size, self.block_count))
        for match in _RUNS_RE.finditer(self.zero):
            start, end = match.span()
            data = match.group()[0] != 1
            for first in range(start, end, MAX_RUN):
                count = min(MAX_RUN, end - first)
                out += _RUN.pack(RUN_DATA if data else RUN_ZERO, count)
                if data:
                    out += self.ids[first * ID_SIZE:(first + count) * ID_SIZE]
        out += blake3.blake3(out).digest()
        return bytes(out)

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
        if version != VERSION or flags != 0:
            raise ManifestCorruptError(f"unsupported disk manifest version {version} (flags {flags:#x})")
        try:
            check_block_size(block_size)
        except ValueError as exc:
            raise ManifestCorruptError(str(exc)) from None
        if count != block_count(disk_size, block_size):
            raise ManifestCorruptError("block count does not match disk and block size")
        ids = bytearray(count * ID_SIZE)
        zero = bytearray(b"\x01") * count
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
            elif kind != RUN_ZERO:
                raise ManifestCorruptError(f"unknown run kind {kind}")
            index += run
        if index != count:
            raise ManifestCorruptError("runs do not cover the disk")
        return cls(disk_size, block_size, bytes(ids), bytes(zero))


def block_count(disk_size: int, block_size: int) -> int:
    return -(-disk_size // block_size)


def empty_manifest(disk_size: int, block_size: int) -> DiskManifest:
    """A manifest of a disk that is all zeros."""
    n = block_count(disk_size, block_size)
    return DiskManifest(disk_size, block_size, bytes(n * ID_SIZE), b"\x01" * n)
