"""Received chunks made durable (DESIGN.md 17.6, 17.7 step 5): each one decoded and checked against its id with
the namespace's key before it is resealed for the vault and appended to a pack; the pack put and flushed, then its
index rows; only then may the messages be acknowledged. The data path's PackWriter and ChunkIndex, as a backup uses
them; the vault's lock is held shared for the stream's life, as a backup holds it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import FLAG_DICT, ChunkCodec, WireForm
from cbr_backup.datapath.errors import ChunkCorruptError
from cbr_backup.datapath.packs import ChunkSource, PackWriter, pack_key, read_pack_entries

NOT_WANTED = "RegionTransferService.6954"
CHECK_FAILED = "RegionTransferService.6953"
NO_DICTIONARY = "RegionTransferService.6957"
_NEVER_FULL = 1 << 40  # the sink closes its pack itself (every FLUSH_BYTES or FLUSH_SECONDS)
DECODE_THREADS = 2
_DECODERS = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="cbr-transfer-check")


@dataclass(frozen=True)
class WireChunk:
    chunk_id: bytes
    raw_size: int
    flags: int
    tag: int
    payload: bytes


@dataclass(frozen=True)
class Rejection:
    chunk_id: bytes
    code: str
    message: str


@dataclass(frozen=True)
class Batch:
    through_seq: int
    indexed: list[bytes]
    stored_bytes: int
    rejected: list[Rejection]


@dataclass(frozen=True)
class Sealed:
    through_seq: int
    pack: tuple | None  # PackWriter.detach()
    indexed: list[bytes]
    rejected: list[Rejection]


@dataclass
class ChunkSink:
    store: object
    index: object
    codec: ChunkCodec
    vault_id: str
    writer: PackWriter
    dictionary: Callable[[int], bytes | None]  # the namespace's dictionaries by tag
    pending_ids: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    pending_since: float = 0.0
    rejected: list[Rejection] = field(default_factory=list)
    seq: int = 0

    @classmethod
    def open(cls, store, open_index, codec: ChunkCodec, vault_id: str, dictionary) -> "ChunkSink":
        index = open_index()
        index.lock_vault(vault_id, exclusive=False)  # GC then sees a writer (no orphan judged, no repack)
        return cls(store, index, codec, vault_id, PackWriter(store, codec, vault_id, target_size=_NEVER_FULL),
                   dictionary)

    def _check(self, chunk: WireChunk, wanted: dict[bytes, int]) -> bytes | Rejection:
        """The chunk's stored value for this vault, or why it is refused."""
        raw_size = wanted.get(chunk.chunk_id)
        if raw_size is None:
            return Rejection(chunk.chunk_id, NOT_WANTED, "not wanted by this transfer")
        if chunk.flags & FLAG_DICT and self.dictionary(chunk.tag) is None:
            return Rejection(chunk.chunk_id, NO_DICTIONARY, f"dictionary {chunk.tag:08x} was not sent (PutDictionary)")
        try:
            return self.codec.from_wire(WireForm(chunk.flags, chunk.tag, chunk.payload), chunk.chunk_id, raw_size)
        except ChunkCorruptError as exc:
            return Rejection(chunk.chunk_id, CHECK_FAILED, str(exc))

    @property
    def pending(self) -> bool:
        return bool(self.pending_ids)

    def receive(self, seq: int, chunks: list[WireChunk], wanted: dict[bytes, int], now: float) -> None:
        """Checks each chunk; the good ones go to the open pack, the others to the next acknowledgement. The checks
        (decompress, keyed hash, seal) run on DECODE_THREADS threads: zstd, BLAKE3 and AES release the GIL."""
        items = []
        for chunk, value in zip(chunks, _DECODERS.map(lambda c: self._check(c, wanted), chunks)):
            if isinstance(value, Rejection):
                self.rejected.append(value)
            else:
                items.append((chunk.chunk_id, wanted[chunk.chunk_id], value))
        if items and not self.pending_ids:
            self.pending_since = now
        self.writer.add_many(items)
        self.pending_ids.extend(chunk for chunk, _, _ in items)
        self.pending_bytes += sum(len(c.payload) for c in chunks if c.chunk_id in wanted)
        self.seq = seq

    def seal(self) -> "Sealed":
        """What arrived since the last seal, its pack taken out of the writer, which opens the next: write() makes
        it durable while further chunks arrive (DESIGN.md 17.7 step 5)."""
        sealed = Sealed(self.seq, self.writer.detach(), self.pending_ids, self.rejected)
        self.pending_ids, self.pending_bytes, self.rejected = [], 0, []
        return sealed

    def write(self, sealed: "Sealed", pack_id: bytes | None = None) -> Batch:
        """The sealed pack put (as pack_id, recorded by the caller for adoption) and flushed, then its rows indexed:
        what the acknowledgement may now promise. One at a time, in seal order."""
        rows = []
        if sealed.pack is not None:
            self.writer.put_detached(sealed.pack, pack_id, durable=True)  # this pack alone, not a syncfs
            rows = self.writer.take_rows()
            self.index.record_new(self.vault_id, rows)
        return Batch(sealed.through_seq, sealed.indexed, sum(row[2] for row in rows), sealed.rejected)

    def close(self) -> None:
        try:
            self.index.unlock_vault(self.vault_id, exclusive=False)
        finally:
            self.index.close()


def adopt_packs(store, index, codec: ChunkCodec, vault_id: str, pack_ids: list[bytes],
                wanted: dict[bytes, int]) -> list[bytes]:
    """On resume (DESIGN.md 17.8): packs a transfer put whose rows never went in (the destination stopped between
    its flush and its index insert). Each wanted chunk they list is decoded and checked, as on arrival, then
    indexed where it lies; a torn or missing pack is skipped (its chunks stay wanted). The ids indexed."""
    source = ChunkSource(store, codec, vault_id)
    adopted: list[bytes] = []
    for pack_id in pack_ids:
        try:
            entries = [e for e in read_pack_entries(store, codec, pack_key(vault_id, pack_id)) if e.chunk in wanted]
        except (ChunkCorruptError, ChunkNotFoundError):
            continue
        values = source.read_pack(pack_id, sorted((e.offset, e.length, e.chunk) for e in entries))
        rows = []
        for e in entries:
            try:
                codec.decode(values.get(e.chunk, b""), e.chunk, wanted[e.chunk])
            except ChunkCorruptError:
                continue
            rows.append((e.chunk, e.raw_size, e.length, pack_id, e.offset))
        index.record_new(vault_id, rows)
        adopted += [row[0] for row in rows]
    return adopted
