"""Disk restore: a manifest becomes a disk again, to a new sparse file or in place over an existing disk.

To a new disk only non-zero blocks are written (the rest stay holes). In place, the target's allocated
blocks are read and hashed with the vault's id key; only blocks whose id differs from the manifest's are
written, blocks that must become zero are punched out, and regions that are holes on both sides are never
touched. Every chunk is decoded and checked against its id before a byte of it is written, so a missing or
corrupt chunk stops the restore with a DataLossError and never puts wrong bytes on the disk.
"""
from __future__ import annotations

import bisect
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import blake3

from cbr_backup.datapath.blockio import (DiskFile, align_up, disk_extents, disk_size, open_disk, punch_hole, read_at,
                                        set_disk_size, sync_disk, write_at)
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.extents import block_ranges
from cbr_backup.datapath.manifest import DiskManifest, patch_length
from cbr_backup.datapath.patches import apply_patch, check_block
from cbr_backup.datapath.packs import ChunkSource, Location
from cbr_backup.datapath.phases import Phases
from cbr_backup.datapath.pipeline import Piece, default_workers, piece_size_for, plan_pieces, run_pipeline
from cbr_backup.engine import copy_into, zero_blocks

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)
log = logging.getLogger("cbr.datapath")
LOCATION_WINDOW_IDS = 4096  # a new-disk restore looks up about this many chunk locations at once (the index's batch)

_DATA_RUNS = re.compile(rb"[^\x01]+")


@dataclass(frozen=True)
class RestoreResult:
    written_bytes: int     # disk bytes the restore changed: blocks written with data, and blocks zeroed
    written_blocks: int    # blocks written with data (they were missing or differed)
    zeroed_blocks: int     # blocks punched out because the backup has zeros there
    zeroed_bytes: int      # their bytes (part of written_bytes: data there became zeros)
    read_bytes: int        # in place: target bytes read to compare
    fetched_chunks: int
    seconds: float
    store_reads: int = 0       # ranged reads (and lone chunk gets) of the chunk store
    store_read_bytes: int = 0  # bytes they returned (packs: the fetched chunks plus small gaps between them)
    needed_bytes: int = 0      # stored bytes of the fetched chunks
    timings: dict | None = None  # Phases.summary(): where the seconds went

    def summary(self) -> dict:
        return {"written_bytes": self.written_bytes, "seconds": round(self.seconds, 3),
                "written_blocks": self.written_blocks, "zeroed_blocks": self.zeroed_blocks,
                "zeroed_bytes": self.zeroed_bytes, "read_bytes": self.read_bytes,
                "fetched_chunks": self.fetched_chunks, "store_reads": self.store_reads,
                "store_read_bytes": self.store_read_bytes, "needed_bytes": self.needed_bytes, **(self.timings or {})}


def restore_to_new_disk(manifest: DiskManifest, store, keys: VaultKeys, vault_id: str,
                        target: str | os.PathLike, *, workers: int | None = None,
                        buffer_size: int | None = None, progress: Progress | None = None,
                        index=None) -> RestoreResult:
    """Writes the backup into target as a fresh sparse file of the disk's size (replacing its contents).

    progress(done, total) as for backup_disk: bytes of the pieces handled so far and in all; raising stops it.
    index: where chunks live (the chunk index); without it, the vault's pack trailers say (DESIGN.md 13.3)."""
    t0 = time.perf_counter()
    given = isinstance(target, DiskFile)  # a provider's writer (emptied by it), left open
    disk = target if given else open_disk(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    buffer_size = piece_size_for(disk, buffer_size)
    try:
        set_disk_size(disk, manifest.disk_size)
        job = _RestoreJob(manifest, store, keys, vault_id, disk, compare=False, progress=progress, index=index)
        # Runs of data a short hole apart share a piece (its zero blocks are skipped): the piece's chunks, stored
        # back to back by the backup, then come in one ranged read instead of one per run.
        ranges = _close_ranges(_data_ranges(manifest), max(1, buffer_size // manifest.block_size) // 4)
        if index is not None:
            job.ahead = _LocationsAhead(job.source, manifest, ranges, _piece_blocks(manifest, buffer_size))
        job.run(ranges, workers, buffer_size)
    finally:
        if not given:
            disk.close()
    result = job.result(time.perf_counter() - t0)
    log.info("disk restored", extra={"fields": {"kind": "new_disk", **result.summary()}})
    return result


def restore_in_place(manifest: DiskManifest, store, keys: VaultKeys, vault_id: str,
                     target: str | os.PathLike, *, workers: int | None = None,
                     buffer_size: int | None = None, progress: Progress | None = None,
                     index=None) -> RestoreResult:
    """Makes the existing disk target equal to the backup, writing only the blocks that differ.

    The target takes the backup's size (grown with a hole or cut, before anything else is written)."""
    t0 = time.perf_counter()
    given = isinstance(target, DiskFile)  # a provider's writer, left open
    disk = target if given else open_disk(target, os.O_RDWR)
    buffer_size = piece_size_for(disk, buffer_size)
    try:
        if disk_size(disk) != manifest.disk_size:
            set_disk_size(disk, manifest.disk_size)
        allocated = block_ranges(disk_extents(disk, manifest.disk_size), manifest.block_size)
        job = _RestoreJob(manifest, store, keys, vault_id, disk, compare=True, progress=progress, index=index)
        job.run(_union(_data_ranges(manifest), allocated), workers, buffer_size)
    finally:
        if not given:
            disk.close()
    result = job.result(time.perf_counter() - t0)
    log.info("disk restored", extra={"fields": {"kind": "in_place", **result.summary()}})
    return result


def _data_ranges(manifest: DiskManifest) -> list[tuple[int, int]]:
    return [match.span() for match in _DATA_RUNS.finditer(manifest.zero)]


def _piece_blocks(manifest: DiskManifest, buffer_size: int) -> int:
    bs = manifest.block_size
    return max(bs, buffer_size - buffer_size % bs) // bs


def _close_ranges(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Sorted block ranges with those less than gap blocks apart joined."""
    joined: list[tuple[int, int]] = []
    for first, end in ranges:
        if joined and first - joined[-1][1] < gap:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((first, end))
    return joined


def _union(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, end in sorted(a + b):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged


class _RestoreJob:
    def __init__(self, manifest: DiskManifest, store, keys: VaultKeys, vault_id: str, disk: DiskFile,
                 compare: bool, progress: Progress | None = None, index=None):
        self.manifest = manifest
        self.store = store
        self.keys = keys
        self.disk = disk
        self.compare = compare
        self.codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
        self.source = ChunkSource(store, self.codec, vault_id, index, views=True)
        self.phases = self.source.phases = Phases()
        self.lock = threading.Lock()
        self.data_bytes = self.written_blocks = self.zeroed_blocks = self.zeroed_bytes = 0
        self.read_bytes = self.fetched = self.needed_bytes = 0
        self.progress = progress
        self.done_bytes = self.total_bytes = 0
        self.ahead: _LocationsAhead | None = None

    def run(self, ranges: list[tuple[int, int]], workers: int | None, buffer_size: int) -> None:
        bs = self.manifest.block_size
        buffer_size = max(bs, buffer_size - buffer_size % bs)
        pieces = plan_pieces(ranges, bs, self.manifest.disk_size, buffer_size)
        self.total_bytes = sum(min(end * bs, self.manifest.disk_size) - first * bs for first, end in ranges)
        if self.progress is not None:
            self.progress(0, self.total_bytes)
        # Twice the cores: restore threads mostly wait on chunk reads and disk writes (measured: 4-6 workers
        # ~3.0 s, 2-3 workers ~3.5 s for the benchmark disk).
        with self.phases.timed("pipeline"):
            run_pipeline(pieces, self._work, workers=workers or 2 * default_workers(), buffer_size=buffer_size)
        with self.phases.timed("fsync"):
            set_disk_size(self.disk, self.manifest.disk_size)  # padded direct writes may have run past the end
            sync_disk(self.disk)

    def result(self, seconds: float) -> RestoreResult:
        return RestoreResult(self.data_bytes + self.zeroed_bytes, self.written_blocks, self.zeroed_blocks,
                             self.zeroed_bytes, self.read_bytes, self.fetched, seconds, self.source.reads,
                             self.source.bytes_read, self.needed_bytes, self.phases.summary())

    def _work(self, piece: Piece, buffer) -> None:
        manifest, bs = self.manifest, self.manifest.block_size
        view = buffer.view
        filled = read_at(self.disk, view, piece.offset, piece.length) if self.compare else 0
        if self.compare and filled < piece.length:
            view[filled:piece.length] = bytes(piece.length - filled)  # past the target's old end: zeros
        target_zero = zero_blocks(view[:piece.length], bs) if self.compare else None
        key = self.keys.id_key
        writes: list[int] = []
        zeros: list[int] = []
        for j in range(piece.block_count):
            i = piece.first_block + j
            want = manifest.block_id(i)
            if self.compare:
                if target_zero[j]:
                    if want is None:
                        continue
                elif want is None:
                    zeros.append(j)
                    continue
                elif blake3.blake3(view[j * bs:min((j + 1) * bs, piece.length)], key=key).digest() == want:
                    continue
            elif want is None:
                continue
            writes.append(j)
        # One batch per piece: adjacent blocks backed up together come back in one ranged read (DESIGN.md 13.3).
        located = self.ahead.locations(piece.first_block) if self.ahead is not None else None
        values = self.source.fetch_many((chunk for j in writes for chunk, _ in
                                         manifest.block_chunks(piece.first_block + j)), located)
        needed = sum(len(value) for value in values.values())
        t0 = time.perf_counter()
        # Fetch and check everything before writing anything of this piece. Each plaintext goes straight into
        # the piece's buffer and a repeated block is copied from its first place there, so a worker holds one
        # piece's stored values and its buffer, not also every plaintext (the worker's peak RSS, DESIGN.md 15.4).
        first_at: dict[bytes, int] = {}
        for j in writes:
            i = piece.first_block + j
            want, length = manifest.block_id(i), manifest.block_length(i)
            seen = first_at.get(want)
            patch = manifest.patch_of(i)
            if seen is None and patch is not None:  # its base with the patch's pages laid over it (DESIGN.md 3.1)
                first_at[want] = j
                apply_patch(view, j * bs, self._decode(values, patch.base, length),
                            self._decode(values, patch.chunk, patch_length(patch.pages, length)), patch.pages, length)
                check_block(view[j * bs:j * bs + length], want, key)
            elif seen is None:
                first_at[want] = j
                copy_into(view, j * bs, self._decode(values, want, length))  # without the GIL (DESIGN.md 10.3)
            else:
                copy_into(view, j * bs, view[seen * bs:seen * bs + length])
        del values  # the stored values are done with before the writes
        t1 = time.perf_counter()
        self.phases.add("decode", t1 - t0)
        for start, end in _runs(writes):
            offset = (piece.first_block + start) * bs
            length = min(end * bs, piece.length) - start * bs
            padded = align_up(length) if self.disk.direct else length
            if padded > length:
                view[start * bs + length:start * bs + padded] = bytes(padded - length)
            write_at(self.disk, view[start * bs:start * bs + padded], offset)
        self.phases.add("write", time.perf_counter() - t1)
        zeroed = 0
        for start, end in _runs(zeros):
            offset = (piece.first_block + start) * bs
            length = min(end * bs, piece.length) - start * bs
            punch_hole(self.disk, offset, length)
            zeroed += length
        with self.lock:
            self.read_bytes += filled
            self.fetched += len(first_at)
            self.needed_bytes += needed
            self.written_blocks += len(writes)
            self.data_bytes += sum(manifest.block_length(piece.first_block + j) for j in writes)
            self.zeroed_blocks += len(zeros)
            self.zeroed_bytes += zeroed
            self.done_bytes += piece.length
            done = self.done_bytes
        if self.progress is not None:
            self.progress(done, self.total_bytes)

    def _decode(self, values: dict[bytes, bytes], chunk: bytes, raw_size: int) -> bytes:
        return self.source.decode(values, chunk, raw_size)


class _LocationsAhead:
    """Where a new disk's chunks live, asked of the index a window of pieces at a time (about one index batch
    of ids, one round trip) instead of once per piece: ~80 lookups per GiB became one or two. Windows are
    cut on piece boundaries, in disk order, which is the order the pipeline takes pieces in; windows three
    behind the newest are dropped, so memory is bounded by the window size, not the disk. A straggler whose
    window was dropped has it looked up again; when a window's lookup fails, its pieces look up their own
    chunks (and meet the error themselves). The job holds the vault's lock (shared) throughout, so no repack
    moves a chunk between a window's lookup and its read (DESIGN.md 13.4)."""

    def __init__(self, source: ChunkSource, manifest: DiskManifest, ranges: list[tuple[int, int]],
                 piece_blocks: int, window_ids: int | None = None):
        window_ids = window_ids or LOCATION_WINDOW_IDS
        self.source = source
        self.manifest = manifest
        self.starts: list[int] = []  # first block of each window
        self.ends: list[int] = []    # block after each window's last piece
        count = window_ids
        for first, end in ranges:
            for start in range(first, end, piece_blocks):
                stop = min(end, start + piece_blocks)
                if count >= window_ids:
                    self.starts.append(start)
                    self.ends.append(stop)
                    count = 0
                count += (stop - start) - manifest.zero.count(1, start, stop)
                self.ends[-1] = stop
        self._windows: dict[int, tuple[threading.Event, dict]] = {}
        self._lock = threading.Lock()

    def locations(self, first_block: int) -> dict[bytes, Location]:
        w = bisect.bisect_right(self.starts, first_block) - 1
        with self._lock:
            entry = self._windows.get(w)
            mine = entry is None
            if mine:
                entry = self._windows[w] = (threading.Event(), {})
                for old in [k for k in self._windows if k < w - 2]:
                    del self._windows[old]
        ready, found = entry
        if mine:
            try:
                found.update(self.source.locate(self._ids(w)))
            finally:
                ready.set()  # on a failure the pieces look up their own (and meet the error themselves)
        else:
            ready.wait()
        return found

    def _ids(self, w: int) -> set[bytes]:
        manifest, zero = self.manifest, self.manifest.zero
        return {chunk for i in range(self.starts[w], self.ends[w]) if not zero[i]
                for chunk, _ in manifest.block_chunks(i)}


def _runs(indexes: list[int]):
    """[start, end) runs of consecutive integers in a sorted list."""
    start = prev = None
    for i in indexes:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield start, prev + 1
            start = prev = i
    if start is not None:
        yield start, prev + 1
