"""A disk manifest as a delta against a parent both regions hold (DESIGN.md 17.5), so that what crosses between
regions grows with the change and not with the disk.

Binary form (little endian):

    header  magic "CBRDMD\\r\\n" | version u16 (=1) | flags u16 (=0) | block_size u32 | disk_size u64
            | block_count u64 | parent_digest (32: the parent manifest's trailing BLAKE3, zeros without one)
    ops     in block order, covering exactly block_count blocks:
              0 SAME count u32   the parent's entries at the same indexes (only within the parent's length)
              1 ZERO count u32
              2 NEW  count u32 | count x 32-byte ids
              3 PATCHED count u32 | count x (block id | base id | patch id | page map): patched blocks (3.1)
    trailer target_digest (32): the rebuilt manifest's own trailing BLAKE3

The receiver rebuilds the manifest, encodes it canonically (one manifest has one encoding) and requires its
digest to equal target_digest: the replica's manifest is then the source's byte for byte.
"""
from __future__ import annotations

import bisect
import hmac
import struct

import blake3

from cbr_backup.datapath.errors import ManifestCorruptError
from cbr_backup.datapath.manifest import (ID_SIZE, MAX_RUN, DiskManifest, Patch, block_count, check_block_size,
                                          patched_entries, read_patched_entries)

MAGIC = b"CBRDMD\r\n"
VERSION = 1
OP_SAME, OP_ZERO, OP_NEW, OP_PATCHED = 0, 1, 2, 3
DIGEST_SIZE = 32
NO_PARENT = bytes(DIGEST_SIZE)

_HEADER = struct.Struct("<8sHHIQQ32s")
_OP = struct.Struct("<BI")
_WINDOW = 1024  # blocks compared at once


class ManifestDeltaError(ValueError):
    """A delta that does not rebuild the manifest it names (RegionTransferService.6952)."""


def manifest_digest(manifest: bytes) -> bytes:
    """An encoded manifest's own trailing BLAKE3 (DESIGN.md 3), which names it in deltas and records."""
    return bytes(manifest[-DIGEST_SIZE:])


def namespace_key_check(id_key: bytes) -> bytes:
    """Proves two regions hold the same source id key without sending it (DESIGN.md 17.3)."""
    return blake3.blake3(b"cbr-namespace-check", key=id_key).digest()


def encode_delta(manifest: bytes, parent: bytes | None) -> bytes:
    """The delta that rebuilds `manifest` from `parent` (both encoded disk manifests; None: no parent).
    A parent of another block size shares nothing and is sent as no parent."""
    new = DiskManifest.decode(manifest)
    old = DiskManifest.decode(parent) if parent is not None else None
    if old is not None and old.block_size != new.block_size:
        old = None
    out = bytearray(_HEADER.pack(MAGIC, VERSION, 0, new.block_size, new.disk_size, new.block_count,
                                 manifest_digest(parent) if old is not None else NO_PARENT))
    for op, start, end in _ops(new, old):
        for first in range(start, end, MAX_RUN):
            count = min(MAX_RUN, end - first)
            out += _OP.pack(op, count)
            if op == OP_NEW:
                out += new.ids[first * ID_SIZE:(first + count) * ID_SIZE]
            elif op == OP_PATCHED:
                out += patched_entries(new, first, count)
    out += manifest_digest(manifest)
    return bytes(out)


def _ops(new: DiskManifest, old: DiskManifest | None):
    """(op, start, end) runs, maximal: SAME where the parent has the same entry, else ZERO or NEW."""
    current, start = None, 0
    for op, first, end in _segments(new, old):
        if op != current:
            if current is not None:
                yield current, start, first
            current, start = op, first
    if current is not None:
        yield current, start, new.block_count


def _segments(new: DiskManifest, old: DiskManifest | None):
    """(op, first, end) per window of blocks equal to the parent's as a whole (one comparison: an unchanged
    TiB disk costs no per-block work), else per block."""
    shared = old.block_count if old is not None else 0
    patched = sorted(set(new.patches) | set(old.patches if old is not None else ()))
    for first in range(0, new.block_count, _WINDOW):
        end = min(first + _WINDOW, new.block_count)
        plain = bisect.bisect_left(patched, first) == bisect.bisect_left(patched, end)  # no patch either side
        if end <= shared and plain and new.zero[first:end] == old.zero[first:end] and \
                new.ids[first * ID_SIZE:end * ID_SIZE] == old.ids[first * ID_SIZE:end * ID_SIZE]:
            yield OP_SAME, first, end
            continue
        for index in range(first, end):
            if index < shared and new.zero[index] == old.zero[index] and \
                    new.ids[index * ID_SIZE:(index + 1) * ID_SIZE] == old.ids[index * ID_SIZE:(index + 1) * ID_SIZE] \
                    and (plain or new.patch_of(index) == old.patch_of(index)):
                yield OP_SAME, index, index + 1
            elif new.zero[index]:
                yield OP_ZERO, index, index + 1
            else:
                yield (OP_NEW if new.patch_of(index) is None else OP_PATCHED), index, index + 1


def apply_delta(delta: bytes, parent: bytes | None) -> bytes:
    """The encoded manifest the delta rebuilds from `parent`; ManifestDeltaError unless its parent digest names
    `parent`, its ops cover the disk exactly and the result's digest is its target digest."""
    view = memoryview(delta)
    if len(view) < _HEADER.size + DIGEST_SIZE:
        raise ManifestDeltaError("manifest delta is truncated")
    magic, version, flags, block_size, disk_size, count, parent_digest = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise ManifestDeltaError("not a manifest delta")
    if version != VERSION or flags != 0:
        raise ManifestDeltaError(f"unsupported manifest delta version {version} (flags {flags:#x})")
    try:
        check_block_size(block_size)
    except ValueError as exc:
        raise ManifestDeltaError(str(exc)) from None
    if count != block_count(disk_size, block_size):
        raise ManifestDeltaError("block count does not match disk and block size")
    old = None
    if parent_digest != NO_PARENT:
        if parent is None or not hmac.compare_digest(manifest_digest(parent), parent_digest):
            raise ManifestDeltaError("the delta's parent is not the manifest offered as its parent")
        try:
            old = DiskManifest.decode(parent)
        except ManifestCorruptError as exc:
            raise ManifestDeltaError(f"parent manifest: {exc}") from None
        if old.block_size != block_size:
            raise ManifestDeltaError("the parent has another block size")
    ids = bytearray(count * ID_SIZE)
    zero = bytearray(b"\x01") * count
    patches: dict[int, Patch] = {}
    old_patched = sorted(old.patches) if old is not None else []
    position, index, end = _HEADER.size, 0, len(view) - DIGEST_SIZE
    while position < end:
        if position + _OP.size > end:
            raise ManifestDeltaError("truncated op")
        op, run = _OP.unpack_from(view, position)
        position += _OP.size
        if run == 0 or index + run > count:
            raise ManifestDeltaError("op overflows the block count")
        if op == OP_SAME:
            if old is None or index + run > old.block_count:
                raise ManifestDeltaError("SAME beyond the parent")
            ids[index * ID_SIZE:(index + run) * ID_SIZE] = old.ids[index * ID_SIZE:(index + run) * ID_SIZE]
            zero[index:index + run] = old.zero[index:index + run]
            for i in old_patched[bisect.bisect_left(old_patched, index):bisect.bisect_left(old_patched, index + run)]:
                patches[i] = old.patches[i]
        elif op == OP_NEW:
            length = run * ID_SIZE
            if position + length > end:
                raise ManifestDeltaError("truncated NEW op")
            ids[index * ID_SIZE:(index + run) * ID_SIZE] = view[position:position + length]
            zero[index:index + run] = bytes(run)
            position += length
        elif op == OP_PATCHED:
            position = read_patched_entries(view[:end], position, index, run, block_size, ids, patches)
            if position is None:
                raise ManifestDeltaError("truncated PATCHED op")
            zero[index:index + run] = bytes(run)
        elif op != OP_ZERO:
            raise ManifestDeltaError(f"unknown op {op}")
        index += run
    if index != count:
        raise ManifestDeltaError("ops do not cover the disk")
    try:
        rebuilt = DiskManifest(disk_size, block_size, bytes(ids), bytes(zero), patches).encode()
    except ValueError as exc:
        raise ManifestDeltaError(str(exc)) from None
    if not hmac.compare_digest(manifest_digest(rebuilt), bytes(view[end:])):
        raise ManifestDeltaError("the rebuilt manifest's digest is not the delta's target digest")
    return rebuilt
