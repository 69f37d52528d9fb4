"""Disk backup: a snapshot file becomes chunks in the vault's store and one manifest.

Write order (DESIGN.md, "Write order" and 12.2): new chunks are appended to packs (datapath/packs.py), put
when full; every COMMIT_EVERY chunks of packs put (and at the end, after the last pack is closed) store.flush(),
then their index rows are inserted; the manifest is put, store.flush(). Only then does the
caller flip the backup row to available and publish the event, so nothing refers to a chunk that is not
durable, and an interrupted backup leaves only orphan packs (reclaimed by GC). Committing in batches keeps
the backup's memory bounded, not its disk size.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import blake3

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath import packs as packfiles
from cbr_backup.datapath.blockio import DiskFile, disk_extents, disk_size, open_disk, read_at
from cbr_backup.datapath.chunk_codec import ID_SIZE, ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import DICTIONARY_SIZE, VaultDictionaries, sample_dictionary
from cbr_backup.datapath.errors import DataPathError, ManifestCorruptError
from cbr_backup.datapath.extents import (block_ranges, changed_since, complement, intersect, merged, spans_by_block,
                                         unchanged_blocks)
from cbr_backup.datapath.manifest import (PAGE_SIZE, DiskManifest, Patch, block_count, check_block_size, patch_length,
                                          patched_pages)
from cbr_backup.datapath.patches import apply_patch, diff_known_pages, diff_pages, patch_plaintext
from cbr_backup.datapath.phases import Phases
from cbr_backup.datapath.pipeline import (Piece, default_workers, piece_size_for, plan_pieces, run_pipeline,
                                         subtract_ranges)
from cbr_backup.engine import zero_blocks

DEFAULT_BLOCK_SIZE = 1 << 20  # chosen by measurement: DESIGN.md, "Block size"
TOUCH_MARGIN = dt.timedelta(hours=1)  # rows touched this recently are not rewritten; must stay below GC grace
COMMIT_EVERY = 16384  # new chunks per durable batch (flush, then index rows): ~3.5 MB of rows and claims
CHANGED_WORKERS = 8  # pipeline threads of an incremental that reads only a provider's changed ranges
PRIME_BASES_MAX = 65536  # bases located up front for a provider's changed ranges (~10 MB of locations)
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


chunk_key = packfiles.chunk_key  # a lone chunk object (vaults from before packs)


def manifest_key(vault_id: str, manifest_id: str) -> str:
    return f"{vault_id}/manifests/{manifest_id}"


class Partial(NamedTuple):
    """A block put together from its parent's content: the spans (within the block) to read, then to zero."""
    reads: list[tuple[int, int]]
    zeros: list[tuple[int, int]]


@dataclass(frozen=True)
class BackupResult:
    manifest_id: str
    manifest: DiskManifest
    manifest_bytes: int        # size of the stored manifest
    logical_bytes: int         # disk size
    read_bytes: int            # bytes read from the snapshot (holes and shared extents are not read)
    data_blocks: int           # non-zero blocks
    new_chunks: int            # chunks this backup wrote to the store
    new_stored_bytes: int      # their stored sizes summed (what their index rows say)
    patched_blocks: int        # changed blocks stored as a patch of their parent's (DESIGN.md 3.1)
    reused_chunks: int         # distinct chunks the index already had
    stored_bytes_added: int    # bytes this backup added to the store: packs, manifest, dictionary
    seconds: float
    timings: dict = field(default_factory=dict)  # Phases.summary(): where the seconds went

    def summary(self) -> dict:
        return {"manifest_id": self.manifest_id, "logical_bytes": self.logical_bytes,
                "read_bytes": self.read_bytes, "new_chunks": self.new_chunks, "patched_blocks": self.patched_blocks,
                "stored_bytes_added": self.stored_bytes_added, "seconds": round(self.seconds, 3), **self.timings}


def load_manifest(store, keys: VaultKeys, vault_id: str, manifest_id: str) -> DiskManifest:
    key = manifest_key(vault_id, manifest_id)
    try:
        value = store.get(key)
    except ChunkNotFoundError:
        raise ManifestCorruptError(f"manifest {key} is missing") from None
    return DiskManifest.decode(ChunkCodec(keys).unseal(value, key.encode(), key))


def backup_disk(snapshot_path: str | os.PathLike, keys: VaultKeys, store, index, vault_id: str, *,
                parent: DiskManifest | None = None, block_size: int | None = None,
                manifest_id: str | None = None, started_time: dt.datetime | None = None,
                previous_snapshot: str | os.PathLike | None = None, workers: int | None = None,
                buffer_size: int | None = None, dictionary_size: int = DICTIONARY_SIZE,
                commit_every: int = COMMIT_EVERY, progress: Progress | None = None,
                pack_target: int | None = None, changed: list[tuple[int, int]] | None = None) -> BackupResult:
    """Backs up the disk image at snapshot_path (which must not change meanwhile: a snapshot).

    block_size: None for the parent's (DEFAULT_BLOCK_SIZE without a parent); another than the parent's makes a
    full backup.
    parent: the previous backup's manifest; its chunks are reused without a lookup per buffer.
    previous_snapshot: the parent's snapshot file, still present, where both are reflink clones: blocks
    whose extents the two still share are taken from the parent without being read (see extents.py).
    started_time: when the backup started by the index's clock (the backup row's start, which GC's cutoff
    uses); defaults to the index's now().
    commit_every: new chunks are made durable and indexed in batches of this many (bounds the memory).
    pack_target: the pack size (default CBR_PACK_TARGET_MIB).
    snapshot_path may be an open DiskFile (a provider's reader, left open); changed: the provider's byte ranges
    that may differ from the parent's snapshot (DESIGN.md 16): blocks outside them are taken from the parent
    like shared ones (instead of previous_snapshot's FIEMAP).
    progress(done, total): called from the pipeline's threads after each piece with the bytes read so far and
    the bytes to read; an exception it raises stops the backup (that is how a job is cancelled).
    """
    t0 = time.perf_counter()
    if block_size is None:  # an incremental keeps its chain's block size: vaults from before 1 MiB blocks too
        block_size = parent.block_size if parent is not None else DEFAULT_BLOCK_SIZE
    check_block_size(block_size)
    buffer_size = piece_size_for(snapshot_path, buffer_size)
    if buffer_size < block_size:
        raise ValueError("buffer_size must hold at least one block")
    buffer_size -= buffer_size % block_size
    if commit_every < 1:
        raise ValueError("commit_every must be at least 1")
    if parent is not None and parent.block_size != block_size:
        parent = None  # ids of other-sized blocks never match; a full backup it is
    manifest_id = manifest_id or str(uuid.uuid4())
    given = isinstance(snapshot_path, DiskFile)
    disk = snapshot_path if given else open_disk(snapshot_path, os.O_RDONLY)
    try:
        job = _BackupJob(disk, keys, store, index, vault_id, parent, block_size, workers, buffer_size,
                         started_time, commit_every, progress, pack_target)
        job.changed = changed
        job.run(previous_snapshot, dictionary_size)
    finally:
        if not given:
            disk.close()
    return job.finish(manifest_id, time.perf_counter() - t0)


class _BackupJob:
    def __init__(self, disk: DiskFile, keys: VaultKeys, store, index, vault_id: str, parent: DiskManifest | None,
                 block_size: int, workers: int | None, buffer_size: int, started_time: dt.datetime | None,
                 commit_every: int, progress: Progress | None, pack_target: int | None = None):
        self.disk = disk
        self.keys = keys
        self.store = store
        self.index = index
        self.vault_id = vault_id
        self.parent = parent
        self.block_size = block_size
        self.workers = workers
        self.buffer_size = buffer_size
        self.size = disk_size(disk)
        n = block_count(self.size, block_size)
        self.ids = bytearray(n * ID_SIZE)
        self.zero = bytearray(b"\x01") * n
        self.since = (started_time or index.now()) - TOUCH_MARGIN
        # Ids the index confirmed (and touched): the parent's, kept (at most the parent's size); lookup hits,
        # a cache cleared at commit_every ids. claimed: ids this backup stores, until their rows are indexed.
        # packs: the open pack and the rows of packs put, committed every commit_every. So memory is bounded
        # by the pack size and the batch, not by the disk size.
        self.parent_known: frozenset[bytes] = frozenset()
        # patches: this backup's patched blocks (index -> Patch); parent_patched: the parent's, by block id,
        # whose base and patch the index confirmed (an unchanged patched block keeps its patch).
        self.patches: dict[int, Patch] = {}
        self.partial: dict[int, Partial] = {}  # blocks put together from the parent (_partial_blocks)
        self.parent_patched: dict[bytes, Patch] = {}
        self.source: packfiles.ChunkSource | None = None  # reads the bases of blocks to patch
        self.known: set[bytes] = set()
        self.claimed: set[bytes] = set()
        self.packs: packfiles.PackWriter | None = None
        self.pack_target = pack_target
        self.commit_every = commit_every
        self.lock = threading.Lock()
        self.parent_checked = threading.Event()
        self.parent_error: BaseException | None = None
        self.read_bytes = 0
        self.new_chunks = 0
        self.new_stored_bytes = 0
        self.stored_added = 0
        self.codec: ChunkCodec | None = None
        self.flusher = _EarlyFlusher(store)
        self.progress = progress
        self.total_bytes = 0
        self.phases = Phases()

    # Setup

    def run(self, previous_snapshot, dictionary_size: int) -> None:
        extents = disk_extents(self.disk, self.size)
        ranges = block_ranges(extents, self.block_size)
        with self.phases.timed("dictionary"):
            dictionaries = VaultDictionaries(self.store, self.vault_id, self.keys)
            current = dictionaries.current()
            if current is None and dictionary_size > 0:
                sample = sample_dictionary(self.disk, ranges, self.block_size, self.size, dictionary_size)
                if sample is not None:
                    current, added = dictionaries.create(sample)
                    self.stored_added += added
        self.codec = ChunkCodec(self.keys, dictionary=current, dictionaries=dictionaries.by_tag)
        self.packs = packfiles.PackWriter(self.store, self.codec, self.vault_id, self.pack_target)
        self.source = packfiles.ChunkSource(self.store, self.codec, self.vault_id, self.index, views=True)
        # A vault without chunks at the start (its first backup) can only meet chunks that concurrent backups are
        # storing: the lookups per piece would find nothing worth a round trip, and a chunk stored twice is
        # harmless (the insert keeps the indexed row and touches it). So they are left out (DESIGN.md 5).
        self.look_up = self.parent is not None or self.index.has_chunks(self.vault_id)

        if self.parent is None:
            self.parent_checked.set()
        elif previous_snapshot is not None or self.changed is not None:
            self._check_parent()  # first: shared blocks are trusted only if their chunks are still there
            if self.parent_error is not None:
                raise self.parent_error
            changed = self.changed if self.changed is not None else self._changed_since(previous_snapshot)
            ranges = subtract_ranges(ranges, self._take_shared(changed))
            self._locate_bases(ranges)
            self.partial = self._partial_blocks(ranges, changed, extents)
        else:
            threading.Thread(target=self._check_parent, name="cbr-parent-check", daemon=True).start()

        self.total_bytes = sum(min(end * self.block_size, self.size) - first * self.block_size
                               for first, end in ranges)
        self.total_bytes -= sum(min(self.block_size, self.size - i * self.block_size) - sum(e - s for s, e in reads)
                                for i, (reads, _) in self.partial.items())
        if self.progress is not None:
            self.progress(0, self.total_bytes)
        try:
            # Each worker reads its own piece: several direct reads in flight keep the device busier than
            # one reader thread (measured: 1.26-1.35 s against 1.44 s for 1.37 GB). Two more workers than
            # default_workers(): while one reads and another holds the GIL, the cores still compress (with the
            # engine's encoder, 4 workers on 2 cores took 3.74-3.99 s where 3 took 4.00-4.43; DESIGN.md 10.4).
            workers = self.workers or getattr(self.disk, "backup_workers", None) or default_workers() + 2
            if self.changed is not None and self.parent is not None and not self.workers:
                # A provider's few changed pieces wait on their bases' reads (one ranged GET each on S3, DESIGN.md
                # 3.1), not on the cores: more of them at once.
                workers = max(workers, CHANGED_WORKERS)
            with self.phases.timed("pipeline"):
                run_pipeline(plan_pieces(ranges, self.block_size, self.size, self.buffer_size), self._work,
                             workers=workers, buffer_size=self.buffer_size)
        finally:
            self.parent_checked.wait()  # never leave the side thread using the index after we return
        if self.parent_error is not None:
            raise self.parent_error

    def _check_parent(self) -> None:
        """Confirms (and touches) the parent's chunks in the index, in batches, beside the reading."""
        try:
            known = self.parent_known = frozenset(
                self.index.touch_existing(self.vault_id, list(self.parent.unique_ids()), self.since))
            self.parent_patched = {self.parent.block_id(i): patch for i, patch in self.parent.patches.items()
                                   if patch.base in known and patch.chunk in known}
        except BaseException as exc:
            self.parent_error = exc
        finally:
            self.parent_checked.set()

    def _locate_bases(self, ranges: list[tuple[int, int]]) -> None:
        """Where the bases of the blocks to read are, in one index lookup: the few blocks a provider reports
        changed each want their base (DESIGN.md 3.1), and one lookup per piece of one block each cost more than
        the rest of the incremental. Skipped when the reads are many: the pieces then look up their own."""
        parent, bases = self.parent, set()
        for first, end in ranges:
            for i in range(first, min(end, parent.block_count)):
                base = self._base_of(i)
                if base is not None:
                    bases.add(base)
                    if len(bases) > PRIME_BASES_MAX:
                        return
        if bases:
            self.source.prime(bases)

    def _base_of(self, i: int) -> bytes | None:
        """The chunk block i of this backup would be patched against: the parent's whole block there, or that
        block's base if it is patched; None without one the index confirmed."""
        parent = self.parent
        if i >= parent.block_count or parent.zero[i]:
            return None
        earlier = parent.patch_of(i)
        base = earlier.base if earlier is not None else parent.block_id(i)
        return base if base in self.parent_known else None

    def _changed_since(self, previous_snapshot) -> list[tuple[int, int]] | None:
        """Byte ranges the previous snapshot no longer shares with this one (None without FIEMAP)."""
        with open(previous_snapshot, "rb") as previous:
            return changed_since(self.disk.fd, previous.fileno(), self.size)

    def _take_shared(self, changed: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """Block ranges outside every changed byte range: ids come from the parent."""
        shared = unchanged_blocks(changed, self.block_size, self.size) if changed is not None else None
        if not shared:
            return []
        parent, taken = self.parent, []
        for first, end in shared:
            end = min(end, parent.block_count)
            run_start = None
            for i in range(first, end):
                chunk, patch = parent.block_id(i), parent.patch_of(i)
                ok = parent.block_length(i) == min(self.block_size, self.size - i * self.block_size) and (
                    chunk is None or (chunk in self.parent_known if patch is None else
                                      self.parent_patched.get(chunk) == patch))
                if ok:
                    if chunk is not None:
                        self.ids[i * ID_SIZE:(i + 1) * ID_SIZE] = chunk
                        self.zero[i] = 0
                    if patch is not None:
                        self.patches[i] = patch
                    if run_start is None:
                        run_start = i
                elif run_start is not None:
                    taken.append((run_start, i))
                    run_start = None
            if run_start is not None:
                taken.append((run_start, end))
        return taken

    def _partial_blocks(self, ranges: list[tuple[int, int]], changed: list[tuple[int, int]] | None,
                        extents: list[tuple[int, int]]) -> dict[int, Partial]:
        """Blocks to read whose changed data is at most half of them: the rest of such a block is the parent's,
        put together from the store, so a 4 KiB write costs a 4 KiB read and not a whole block's (DESIGN.md 3.2).
        Changed parts that are holes now are zeroed, not read. Only blocks whose parent content is known qualify:
        zeros, or a chunk the index confirmed (a whole block, or a patch whose base and patch it has)."""
        if not changed or self.parent is None:
            return {}
        bs, parent, to_read = self.block_size, self.parent, set()
        for first, end in ranges:
            to_read.update(range(first, end))
        changed, data = merged(changed), merged(extents)
        reads = spans_by_block(intersect(changed, data), bs, self.size, PAGE_SIZE)
        zeros = spans_by_block(intersect(changed, complement(data, self.size)), bs, self.size)
        out = {}
        for i in to_read.intersection(reads.keys() | zeros.keys()):
            length = min(bs, self.size - i * bs)
            held = reads.get(i, [])
            if sum(e - s for s, e in held) * 2 > length or i >= parent.block_count \
                    or parent.block_length(i) != length:
                continue
            if not parent.zero[i]:
                patch = parent.patch_of(i)
                if self._base_of(i) is None or (
                        patch is not None and self.parent_patched.get(parent.block_id(i)) != patch):
                    continue
            out[i] = Partial(held, zeros.get(i, []))
        return out

    # The pipeline

    def _read_piece(self, piece: Piece, buffer) -> tuple[int, dict[int, dict[int, bytes] | None]]:
        """Fills the buffer with the piece: whole blocks read, partial blocks (_partial_blocks) put together from
        their parent content and their changed spans. Returns (bytes read, what _parent_content returned: for
        each block put together, its base's pages that may differ, None for a zero block)."""
        bs, first = self.block_size, piece.first_block
        partial = [j for j in range(piece.block_count) if first + j in self.partial] if self.partial else []
        bases = self._parent_content(piece, buffer, partial) if partial else {}
        unread = [j for j in partial if j not in bases]
        if unread:  # read whole after all: the progress total grows by what was meant to stay unread
            with self.lock:
                self.total_bytes += sum(min(bs, piece.length - j * bs)
                                        - sum(e - s for s, e in self.partial[first + j].reads) for j in unread)
        read, j = 0, 0
        while j < piece.block_count:
            if j in bases:
                reads, zeros = self.partial[first + j]
                for s, e in zeros:
                    buffer.view[j * bs + s:j * bs + e] = bytes(e - s)
                for s, e in reads:
                    read += self._read_exact(buffer.view[j * bs + s:], piece.offset + j * bs + s, e - s)
                j += 1
                continue
            k = j
            while k < piece.block_count and k not in bases:
                k += 1
            length = min(k * bs, piece.length) - j * bs
            read += self._read_exact(buffer.view[j * bs:], piece.offset + j * bs, length)
            j = k
        return read, bases

    def _read_exact(self, view, offset: int, length: int) -> int:
        filled = read_at(self.disk, view, offset, length)
        if filled != length:
            raise OSError(f"short read of the snapshot at {offset}: {filled} of {length} bytes "
                          f"(the snapshot changed size?)")
        return filled

    def _parent_content(self, piece: Piece, buffer, partial: list[int]) -> dict[int, dict[int, bytes] | None]:
        """Writes the parent's content of the given blocks of the piece into the buffer, from the store; returns
        {block: its base's bytes in the pages that may differ from it (the changed spans' and the parent patch's),
        None for a zero block} for those written and checked against the parent's block id (a block whose base or
        patch cannot be read or does not make the block is read whole instead). Only those pages of a base are
        kept: a whole 1 MiB base per block in flight cost the usr incremental ~30 MB of peak memory."""
        bs, first, parent = self.block_size, piece.first_block, self.parent
        out: dict[int, dict[int, bytes] | None] = {}
        for j in partial:
            if parent.zero[first + j]:
                at = j * bs
                buffer.view[at:at + bs] = bytes(bs)  # the buffer holds an earlier piece: zeros, not leftovers
                out[j] = None
        wanted = {j: (self._base_of(first + j), parent.patch_of(first + j)) for j in partial if j not in out}
        if not wanted:
            return out
        values = self.source.fetch_many({base for base, _ in wanted.values()}
                                        | {patch.chunk for _, patch in wanted.values() if patch is not None})
        for j, (base, patch) in wanted.items():
            length = min(bs, piece.length - j * bs)
            at = j * bs
            try:
                plain = self.source.decode(values, base, length)
                if patch is None:
                    buffer.view[at:at + length] = plain
                else:
                    data = self.source.decode(values, patch.chunk, patch_length(patch.pages, length))
                    apply_patch(buffer.view, at, plain, data, patch.pages, length)
            except DataPathError:
                continue
            # A whole base was checked against its id by decode; a patched one must still make the parent's block
            # (else verify reports it, and the block is read whole).
            if patch is not None and blake3.blake3(buffer.view[at:at + length],
                                                   key=self.keys.id_key).digest() != parent.block_id(first + j):
                continue
            reads, zeros = self.partial[first + j]
            maybe = {p for s, e in reads + zeros for p in range(s // PAGE_SIZE, -(-e // PAGE_SIZE))}
            if patch is not None:
                maybe.update(p for s, e in patched_pages(patch.pages, length)
                             for p in range(s // PAGE_SIZE, -(-e // PAGE_SIZE)))
            out[j] = {p: bytes(plain[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]) for p in sorted(maybe)}
        return out

    def _work(self, piece: Piece, buffer) -> None:
        timed, t0 = self.phases.add, time.perf_counter()
        filled, decoded = self._read_piece(piece, buffer)
        t1 = time.perf_counter()
        timed("read", t1 - t0)
        bs = self.block_size
        view = buffer.view[:piece.length]
        flags = zero_blocks(view, bs)
        key = self.keys.id_key
        ids, zero, known, parent_known = self.ids, self.zero, self.known, self.parent_known
        first = piece.first_block
        fresh: list[tuple[int, bytes]] = []
        for j, flag in enumerate(flags):
            if flag:
                continue
            chunk = blake3.blake3(view[j * bs:(j + 1) * bs], key=key).digest()
            i = first + j
            ids[i * ID_SIZE:(i + 1) * ID_SIZE] = chunk
            zero[i] = 0
            if chunk not in known and chunk not in parent_known:
                fresh.append((j, chunk))
        t2 = time.perf_counter()
        timed("zero_and_hash", t2 - t1)
        with self.lock:
            self.read_bytes += filled
            done = self.read_bytes
        if self.progress is not None:
            self.progress(done, self.total_bytes)
        if not fresh:
            return
        if not self.parent_checked.is_set():
            self.parent_checked.wait()
        parent_known = self.parent_known  # complete now
        if self.parent_patched:  # an unchanged patched block keeps its parent's patch
            fresh = [(j, chunk) for j, chunk in fresh if not self._keep_patch(first + j, chunk)]
        unknown = [(j, chunk) for j, chunk in fresh
                   if chunk not in known and chunk not in parent_known and chunk not in self.claimed]
        # Changed blocks of an incremental become patches of their parent's (DESIGN.md 3.1), unless the index turns
        # out to have the whole block: the blocks' and the patches' ids go in one lookup.
        patched = self._patch(view, first, unknown, decoded) if self.parent is not None and unknown else []
        t3 = time.perf_counter()
        timed("patch", t3 - t2)
        asked = [chunk for _, chunk in unknown] + [patch.chunk for _, patch, _ in patched if patch.chunk not in known
                                                   and patch.chunk not in parent_known]
        found = self._look_up(asked) if self.look_up else set()
        t3b = time.perf_counter()
        timed("index_lookup", t3b - t3)
        if patched:
            block_of = dict(unknown)
            patched = [(j, patch, plain) for j, patch, plain in patched if block_of[j] not in found]
            for j, patch, _ in patched:
                self.patches[first + j] = patch
            fresh = [(j, chunk) for j, chunk in fresh if first + j not in self.patches]
        mine: list[tuple[int, bytes]] = []
        mine_patches: list[tuple[Patch, bytes]] = []
        with self.lock:
            for j, chunk in fresh:
                if chunk in found or chunk in known or chunk in parent_known or chunk in self.claimed:
                    continue
                self.claimed.add(chunk)
                mine.append((j, chunk))
            for _, patch, plain in patched:
                if patch.chunk in found or patch.chunk in known or patch.chunk in parent_known \
                        or patch.chunk in self.claimed:
                    continue
                self.claimed.add(patch.chunk)
                mine_patches.append((patch, plain))
        if not mine and not mine_patches:
            return
        blocks, chunks = [j for j, _ in mine], [chunk for _, chunk in mine]
        # The piece's values in one engine call without the GIL (DESIGN.md 10.4).
        values = self.codec.encode_blocks(view, bs, blocks, chunks) if mine else []
        new = [(chunk, min(bs, piece.length - j * bs), value) for j, chunk, value in zip(blocks, chunks, values)]
        new += [(patch.chunk, len(plain), self.codec.encode(plain, patch.chunk)) for patch, plain in mine_patches]
        t4 = time.perf_counter()
        timed("compress_encrypt", t4 - t3b)
        # The piece's new chunks go in back to back: restoring the piece reads them with one ranged read.
        self.packs.add_many(new)
        timed("pack_append_put", time.perf_counter() - t4)
        written = sum(len(value) for _, _, value in new)
        with self.lock:
            self.new_chunks += len(new)
            self.new_stored_bytes += written
        self.flusher.wrote(written)
        batch = self.packs.take_rows(at_least=self.commit_every)
        if batch:
            self._commit(batch)

    def _look_up(self, ids: list[bytes]) -> set[bytes]:
        """The ids the index has (touched, so GC keeps them), remembered in the known cache."""
        found = self.index.touch_existing(self.vault_id, ids, self.since) if ids else set()
        if found:
            if len(self.known) >= self.commit_every:
                self.known.clear()  # only a cache: the index answers again
            self.known.update(found)
        return found

    def _keep_patch(self, i: int, chunk: bytes) -> bool:
        patch = self.parent_patched.get(chunk)
        if patch is None:
            return False
        self.patches[i] = patch
        return True

    def _patch(self, view, first: int, changed: list[tuple[int, bytes]],
               decoded: dict[int, dict[int, bytes] | None]) -> list[tuple[int, Patch, bytes]]:
        """(block number in the piece, Patch, the patch's plaintext) for each of the piece's changed blocks that
        differs from its base (the parent's whole block at the same place, DESIGN.md 3.1) in few enough pages.
        decoded: for blocks put together from their parent (by block number in the piece), their bases' pages that
        may differ (_parent_content): those blocks need no base read."""
        bs, parent = self.block_size, self.parent
        bases: dict[int, bytes] = {}
        for j, _ in changed:
            i = first + j
            base = self._base_of(i)  # confirmed and touched: GC keeps it while this backup runs
            if base is not None and parent.block_length(i) == min(bs, len(view) - j * bs):
                bases[j] = base
        if not bases:
            return []
        missing = {base for j, base in bases.items() if decoded.get(j) is None}
        values = self.source.fetch_many(missing) if missing else {}
        plain: dict[bytes, bytes] = {}
        out: list[tuple[int, Patch, bytes]] = []
        for j, base in bases.items():
            block = view[j * bs:min(len(view), (j + 1) * bs)]
            if decoded.get(j) is not None:
                pages = diff_known_pages(block, decoded[j], bs)
            else:
                try:
                    if base not in plain:
                        plain[base] = self.source.decode(values, base, len(block))
                except DataPathError:
                    continue  # an unreadable base: the block is stored whole (verify reports the base)
                pages = diff_pages(block, plain[base], bs)
            if pages is None:
                continue
            data = patch_plaintext(block, pages)
            out.append((j, Patch(base, blake3.blake3(data, key=self.keys.id_key).digest(), pages), data))
        return out

    def _commit(self, rows: list[packfiles.Row]) -> None:
        """Write order steps 2 and 3 for one batch: the packs holding the chunks become durable, then their rows
        are indexed (with last_referenced_time = now, after this backup's start, so GC leaves them alone)."""
        with self.phases.timed("store_flush"):
            self.store.flush()
        with self.phases.timed("index_insert"):
            self.index.record_new(self.vault_id, rows)
        self.look_up = True  # the vault has rows now: later pieces may meet them
        with self.lock:
            self.claimed.difference_update(row[0] for row in rows)  # the index answers for them now

    # The end: the write order

    def finish(self, manifest_id: str, elapsed_before: float) -> BackupResult:
        t0 = time.perf_counter()
        with self.phases.timed("early_flush_wait"):
            self.flusher.stop()
        with self.phases.timed("last_pack_put"):
            self.packs.close()  # 1, 2. the last pack is put and durable; only then are its chunks indexed
        self._commit(self.packs.take_rows())
        t1 = time.perf_counter()
        manifest = DiskManifest(self.size, self.block_size, bytes(self.ids), bytes(self.zero), dict(self.patches))
        key = manifest_key(self.vault_id, manifest_id)
        value = self.codec.seal(manifest.encode(), key.encode())
        if not self.store.put(key, value):                  # 3. the manifest, then its own barrier
            raise FileExistsError(f"manifest {key} exists already")
        self.store.flush()
        self.phases.add("manifest", time.perf_counter() - t1)
        referenced = manifest.unique_ids()
        return BackupResult(
            manifest_id=manifest_id, manifest=manifest, manifest_bytes=len(value), logical_bytes=self.size,
            read_bytes=self.read_bytes, data_blocks=manifest.data_block_count, new_chunks=self.new_chunks,
            new_stored_bytes=self.new_stored_bytes, patched_blocks=len(manifest.patches),
            reused_chunks=len(referenced) - self.new_chunks,
            stored_bytes_added=self.stored_added + self.packs.bytes_written + len(value),
            seconds=elapsed_before + time.perf_counter() - t0, timings=self.phases.summary())


class _EarlyFlusher:
    """Starts the store's flush on a side thread each time EARLY_FLUSH_BYTES more have been written, so the
    device writes chunks back while the pipeline still computes and the barrier at the end finds little
    left to do. Only the final flush counts for durability; an early one that fails is simply repeated."""

    EARLY_FLUSH_BYTES = 192 << 20

    def __init__(self, store):
        self._store = store
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wrote(self, nbytes: int) -> None:
        with self._lock:
            self._pending += nbytes
            if self._pending < self.EARLY_FLUSH_BYTES or (self._thread is not None and self._thread.is_alive()):
                return
            self._pending = 0
            self._thread = threading.Thread(target=self._flush, name="cbr-early-flush", daemon=True)
            self._thread.start()

    def _flush(self) -> None:
        try:
            self._store.flush()
        except Exception:  # noqa: BLE001 - the final flush will raise it
            pass

    def stop(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
