"""Reads out of a backup without restoring it (DESIGN.md 18): a byte range of a disk image, a tree's entries, a
byte range of one file of a tree, and the part of a tree a selective restore takes.

Chunks are fetched with ChunkSource and checked with ChunkSource.decode, the restore's own check: every chunk of a
batch is checked before any byte of the batch is handed out, and a missing or damaged one raises a DataLossError
instead of yielding wrong bytes. Memory is bounded by FETCH_BYTES of plaintext plus one piece.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

from cbr_backup.datapath.manifest import DiskManifest, Patch, patch_length
from cbr_backup.datapath.packs import ChunkSource
from cbr_backup.datapath.patches import apply_patch, check_block
from cbr_backup.datapath.tree_manifest import EntryKind, TreeEntry, TreeManifest, split_path

PIECE_BYTES = 1 << 20   # the most a Piece carries (one gRPC message)
FETCH_BYTES = 8 << 20   # chunks fetched and checked together (neighbours in a pack come in one ranged read)


class Patched(NamedTuple):
    """A patched block of a disk image (DESIGN.md 3.1) in place of a segment's chunk id."""
    block_id: bytes
    patch: Patch


# (offset of the segment in the image or file, its length, its chunk id (or Patched) or None for zeros)
Segment = tuple[int, int, "bytes | Patched | None"]


@dataclass(frozen=True)
class Piece:
    """data at offset, or (hole > 0) that many zero bytes at offset that were not sent."""
    offset: int
    data: bytes = b""
    hole: int = 0


def image_range(manifest: DiskManifest, source: ChunkSource, offset: int, length: int,
                holes: bool = False) -> Iterator[Piece]:
    """Pieces covering [offset, offset + length) of the disk image, in order (the range lies within the image)."""
    if length <= 0:
        return
    bs = manifest.block_size
    blocks = range(offset // bs, (offset + length - 1) // bs + 1)
    yield from _pieces(((i * bs, manifest.block_length(i), _block_chunk(manifest, i)) for i in blocks), source,
                       offset, offset + length, holes)


def _block_chunk(manifest: DiskManifest, index: int) -> "bytes | Patched | None":
    patch = manifest.patch_of(index)
    return manifest.block_id(index) if patch is None else Patched(manifest.block_id(index), patch)


def file_range(entry: TreeEntry, source: ChunkSource, offset: int, length: int,
               holes: bool = False) -> Iterator[Piece]:
    """Pieces covering [offset, offset + length) of a regular file's content (within its size), in order."""
    if length <= 0:
        return
    yield from _pieces(_file_segments(entry), source, offset, offset + length, holes)


def _file_segments(entry: TreeEntry) -> Iterator[Segment]:
    at = 0
    for chunk, size in entry.segments:
        yield at, size, chunk
        at += size


def _pieces(segments: Iterable[Segment], source: ChunkSource, start: int, end: int, holes: bool) -> Iterator[Piece]:
    out = _PieceMaker(holes)
    batch: list[Segment] = []
    batch_bytes = 0
    for segment in segments:
        at, size, chunk = segment
        if at + size <= start:
            continue
        if at >= end:
            break
        batch.append(segment)
        batch_bytes += size if chunk is not None else 0
        if batch_bytes >= FETCH_BYTES:
            yield from _emit(batch, source, start, end, out)
            batch, batch_bytes = [], 0
    if batch:
        yield from _emit(batch, source, start, end, out)
    yield from out.finish()


def _emit(batch: list[Segment], source: ChunkSource, start: int, end: int, out: "_PieceMaker") -> Iterator[Piece]:
    wanted: dict[bytes, int] = {}
    for _, size, chunk in batch:
        if isinstance(chunk, Patched):
            wanted[chunk.patch.base] = size
            wanted[chunk.patch.chunk] = patch_length(chunk.patch.pages, size)
        elif chunk is not None:
            wanted[chunk] = size
    values = source.fetch_many(wanted) if wanted else {}
    plain = {chunk: source.decode(values, chunk, size) for chunk, size in wanted.items()}  # all checked first
    for _, size, chunk in batch:
        if isinstance(chunk, Patched) and chunk not in plain:
            block = plain[chunk] = bytearray(size)
            apply_patch(block, 0, plain[chunk.patch.base], plain[chunk.patch.chunk], chunk.patch.pages, size)
            check_block(block, chunk.block_id, source.codec.keys.id_key)
    for at, size, chunk in batch:
        lo, hi = max(at, start), min(at + size, end)
        if chunk is None:
            yield from out.zeros(lo, hi - lo)
        else:
            yield from out.data(lo, memoryview(plain[chunk])[lo - at:hi - at])


class _PieceMaker:
    """Joins data into pieces of PIECE_BYTES and neighbouring zeros into one hole (or zeros as data)."""

    def __init__(self, holes: bool):
        self.holes = holes
        self.buffer = bytearray()
        self.data_at = 0
        self.hole_at = self.hole = 0

    def data(self, offset: int, data) -> Iterator[Piece]:
        yield from self._end_hole()
        if not self.buffer:
            self.data_at = offset
        view = memoryview(data)
        while view:
            room = PIECE_BYTES - len(self.buffer)
            self.buffer += view[:room]
            view = view[room:]
            if len(self.buffer) >= PIECE_BYTES:
                yield from self._end_data()

    def zeros(self, offset: int, length: int) -> Iterator[Piece]:
        if not self.holes:
            while length > 0:
                n = min(length, PIECE_BYTES)
                yield from self.data(offset, bytes(n))
                offset, length = offset + n, length - n
            return
        yield from self._end_data()
        if not self.hole:
            self.hole_at = offset
        self.hole += length

    def finish(self) -> Iterator[Piece]:
        yield from self._end_data()
        yield from self._end_hole()

    def _end_data(self) -> Iterator[Piece]:
        if self.buffer:
            piece = Piece(self.data_at, bytes(self.buffer))
            self.data_at += len(self.buffer)
            self.buffer = bytearray()
            yield piece

    def _end_hole(self) -> Iterator[Piece]:
        if self.hole:
            piece = Piece(self.hole_at, hole=self.hole)
            self.hole = 0
            yield piece


class TreeView:
    """A tree manifest looked up by path: an entry, a directory's entries, a file's content."""

    def __init__(self, manifest: TreeManifest):
        self.manifest = manifest
        self.by_path: dict[bytes, TreeEntry] = {entry.path: entry for entry in manifest.entries}
        self.children: dict[bytes, list[TreeEntry]] = defaultdict(list)
        for entry in manifest.entries[1:]:
            self.children[split_path(entry.path)[0]].append(entry)  # walk order: names sorted as bytes

    def entry(self, path: bytes) -> TreeEntry | None:
        return self.by_path.get(path)

    def listing(self, path: bytes) -> list[TreeEntry] | None:
        """A directory's entries, a non-directory's own entry; None if nothing is there."""
        entry = self.by_path.get(path)
        if entry is None:
            return None
        return list(self.children.get(path, ())) if entry.kind == EntryKind.DIRECTORY else [entry]

    def file_of(self, entry: TreeEntry) -> TreeEntry:
        """The entry holding the content and metadata: a hard link's file, else entry itself."""
        return self.by_path[entry.target] if entry.kind == EntryKind.HARDLINK else entry

    def select(self, paths: Iterable[bytes]) -> TreeManifest:
        """The part of the tree a selective restore writes: each path (a directory with everything below it) and the
        directories above them. A hard link whose file is left out becomes a copy of that file, so the restore never
        links to whatever the target holds at that path. Paths must exist (check with entry() first)."""
        chosen = set()
        for path in paths:
            chosen.add(path)
            parent = path
            while parent:
                parent = split_path(parent)[0]
                chosen.add(parent)
        roots = tuple(paths)
        kept: list[TreeEntry] = []
        for entry in self.manifest.entries:
            if entry.path in chosen or any(entry.path.startswith(root + b"/") for root in roots):
                kept.append(entry)
        names = {entry.path for entry in kept}
        for i, entry in enumerate(kept):
            if entry.kind == EntryKind.HARDLINK and entry.target not in names:
                kept[i] = replace(self.by_path[entry.target], path=entry.path)
        return TreeManifest(tuple(kept))
