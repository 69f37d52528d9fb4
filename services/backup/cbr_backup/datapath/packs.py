"""Pack files: many stored chunk values in one store object, with a sealed trailer that lists them.

The format, its write order and the GC rules are in DESIGN.md section 13. `PackWriter` is the one put path the
disk and tree backups (and GC's repack) share; `ChunkSource` reads stored values back in batches, from packs by
ranged reads (adjacent chunks merged into one read) or, for vaults from before packs, from lone chunk keys.
"""
from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import ID_SIZE, ChunkCodec
from cbr_backup.datapath.errors import ChunkCorruptError, ChunkMissingError
from cbr_backup.engine import copy_into

DEFAULT_PACK_TARGET_MIB = 24  # DESIGN.md 13 and 15.4: the packs in flight are most of the worker's peak memory
PACK_ID_SIZE = 16
PACK_SLACK = 1 << 20  # mapped room past the target: the value that fills a pack and the pack's tail
MAPPED_MAX = 256 << 20  # larger targets (a writer its caller detaches, DESIGN.md 17.7; tests) grow a bytearray
MAX_PUTS = 1  # packs put at once by one writer (DESIGN.md 13.2)
MERGE_GAP = 64 << 10  # chunks of one pack closer than this are read with one ranged read
FOOTER_MAGIC = b"CBRPACK1"
_FOOTER = struct.Struct("<QIHH8s")              # data end (= trailer offset), trailer length, version, flags, magic
TRAILER_MAGIC = b"CBRPTR\r\n"
_TRAILER_HEAD = struct.Struct("<8sHHI")         # magic, version, flags, count
_ENTRY = struct.Struct(f"<{ID_SIZE}sIQI")       # chunk id, raw size, offset, length
VERSION = 1
FOOTER_SIZE = _FOOTER.size


def pack_target_size() -> int:
    """CBR_PACK_TARGET_MIB (default 24): the size at which the open pack is closed."""
    mib = int(os.environ.get("CBR_PACK_TARGET_MIB", DEFAULT_PACK_TARGET_MIB))
    if not 1 <= mib <= 1024:
        raise ValueError(f"CBR_PACK_TARGET_MIB must be 1-1024, not {mib}")
    return mib << 20


def pack_prefix(vault_id: str) -> str:
    return f"{vault_id}/packs/"


def pack_key(vault_id: str, pack_id: bytes) -> str:
    return f"{vault_id}/packs/{pack_id.hex()}"


def chunk_key(vault_id: str, chunk: bytes) -> str:
    return f"{vault_id}/chunks/{chunk.hex()}"  # a lone chunk: the layout before packs


@dataclass(frozen=True)
class PackEntry:
    chunk: bytes
    raw_size: int
    offset: int
    length: int


# An index row: (chunk id, raw size, stored size, pack id or None, offset in the pack or None)
Row = tuple[bytes, int, int, "bytes | None", "int | None"]


def encode_pack(codec: ChunkCodec, key: str, data: bytes | bytearray, entries: list[PackEntry]) -> bytes:
    """data (the chunk values back to back) followed by the sealed trailer and the footer."""
    return bytes(data) + pack_tail(codec, key, len(data), entries)


def pack_tail(codec: ChunkCodec, key: str, data_end: int, entries: list[PackEntry]) -> bytes:
    """The sealed trailer and the footer that follow data_end bytes of chunk values."""
    plain = bytearray(_TRAILER_HEAD.pack(TRAILER_MAGIC, VERSION, 0, len(entries)))
    for e in entries:
        plain += _ENTRY.pack(e.chunk, e.raw_size, e.offset, e.length)
    trailer = codec.seal(bytes(plain), key.encode())
    return trailer + _FOOTER.pack(data_end, len(trailer), VERSION, 0, FOOTER_MAGIC)


def decode_trailer(codec: ChunkCodec, key: str, trailer: bytes, data_end: int) -> list[PackEntry]:
    """The trailer's entries, checked: known version, every chunk within the data, no overlap, no id twice."""
    plain = codec.unseal(trailer, key.encode(), key)
    if len(plain) < _TRAILER_HEAD.size:
        raise ChunkCorruptError(key, "pack trailer too short")
    magic, version, flags, count = _TRAILER_HEAD.unpack_from(plain)
    if magic != TRAILER_MAGIC or version != VERSION or flags != 0:
        raise ChunkCorruptError(key, "not a pack trailer of a known version")
    if len(plain) != _TRAILER_HEAD.size + count * _ENTRY.size:
        raise ChunkCorruptError(key, "pack trailer length does not match its count")
    entries = [PackEntry(*_ENTRY.unpack_from(plain, _TRAILER_HEAD.size + i * _ENTRY.size)) for i in range(count)]
    end, seen = 0, set()
    for e in sorted(entries, key=lambda e: e.offset):
        if e.offset < end or e.offset + e.length > data_end or e.length == 0 or e.chunk in seen:
            raise ChunkCorruptError(key, "pack trailer lists overlapping, repeated or out-of-range chunks")
        end = e.offset + e.length
        seen.add(e.chunk)
    return entries


def read_pack_entries(store, codec: ChunkCodec, key: str) -> list[PackEntry]:
    """A pack's chunk list from its footer and trailer alone (two ranged reads; no database)."""
    footer = store.read_ranges(key, [(-FOOTER_SIZE, FOOTER_SIZE)])[0]
    if len(footer) != FOOTER_SIZE:
        raise ChunkCorruptError(key, "pack shorter than its footer")
    data_end, trailer_len, version, flags, magic = _FOOTER.unpack(footer)
    if magic != FOOTER_MAGIC or version != VERSION or flags != 0:
        raise ChunkCorruptError(key, "not a pack footer of a known version")
    trailer = store.read_ranges(key, [(data_end, trailer_len)])[0]
    if len(trailer) != trailer_len:
        raise ChunkCorruptError(key, "pack shorter than its trailer")
    return decode_trailer(codec, key, trailer, data_end)


def pack_size(store, key: str) -> int:
    """The pack's size from its footer (data, trailer, footer); 0 if it is gone, its length if it has no footer."""
    try:
        footer = store.read_ranges(key, [(-FOOTER_SIZE, FOOTER_SIZE)])[0]
    except ChunkNotFoundError:
        return 0
    if len(footer) != FOOTER_SIZE:
        return len(footer)
    data_end, trailer_len, *_ = _FOOTER.unpack(footer)
    return data_end + trailer_len + FOOTER_SIZE


class PackBuffer:
    """A pack's bytes as they are appended. Within `capacity` they live in an anonymous mapping: the kernel zeroes
    its pages as they are first written (a bytearray of that size is zeroed up front, holding the GIL) and takes
    them back as soon as the pack is dropped. Growing a bytearray value by value instead left its freed steps in
    malloc's per-thread arenas, the largest part of the worker's peak RSS on RBD (DESIGN.md 13.2, 15.4). Past capacity
    (a value larger than the slack, or no capacity given) the bytes move to a growing bytearray."""

    def __init__(self, capacity: int | None, spare: "PackBuffer | None" = None):
        """spare: a buffer of the same capacity that is done with, whose mapping is taken over: its pages are
        resident already, so the kernel neither faults nor zeroes them again (3% of a full backup's CPU)."""
        if spare is not None and spare._map is not None and len(spare._map) == capacity:
            self._map, spare._map = spare._map, None
        else:
            self._map = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if capacity else None
            if self._map is not None and hasattr(mmap, "MADV_HUGEPAGE"):
                self._map.madvise(mmap.MADV_HUGEPAGE)
        self._grown: bytearray | None = None if capacity else bytearray()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def mapped(self) -> bool:
        return self._grown is None and self._map is not None

    def append(self, value) -> None:
        end = self._size + len(value)
        if self._grown is None and end <= len(self._map):
            copy_into(self._map, self._size, value)  # without the GIL (DESIGN.md 10.3)
        else:
            if self._grown is None:
                self._grown, self._map = bytearray(self._map[:self._size]), None
            self._grown += value
        self._size = end

    def content(self):
        """The bytes appended so far, not copied: a memoryview of the mapping, or the bytearray."""
        return self._grown if self._grown is not None else memoryview(self._map)[:self._size]


class PackWriter:
    """Appends new chunk values to an open pack, puts the pack when it reaches the target size (or on close()),
    and hands out the index rows of packs that were put (DESIGN.md 13.2: the caller flushes the store before
    inserting them). Thread-safe: the pipeline's workers add concurrently; a full pack is put by the worker
    that found it full, outside the lock, while the others go on filling the next one."""

    def __init__(self, store, codec: ChunkCodec, vault_id: str, target_size: int | None = None,
                 max_puts: int = MAX_PUTS):
        self.store = store
        self.codec = codec
        self.vault_id = vault_id
        self.target_size = target_size or pack_target_size()
        self.max_puts = max(1, max_puts)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._putting = 0
        self._data: PackBuffer | None = None  # mapped when the first value comes
        self._spare: PackBuffer | None = None  # the last pack put, whose mapping the next pack takes over
        self._entries: list[PackEntry] = []
        self._open_ids: set[bytes] = set()
        self._rows: list[Row] = []  # rows of packs already put, not yet taken
        self.packs_written = 0
        self.bytes_written = 0  # whole packs: values, trailers, footers

    def add(self, chunk: bytes, raw_size: int, value: bytes) -> bool:
        """Appends value to the open pack; False (and nothing appended) if chunk is in the open pack already."""
        return self.add_many([(chunk, raw_size, value)]) == 1

    def add_many(self, items: list[tuple[bytes, int, bytes]]) -> int:
        """Appends (chunk, raw_size, value)s back to back (a restore of the piece they came from then reads
        them with one ranged read); returns how many were appended (ids in the open pack already are not).

        A full pack is put by the caller that finds it full, outside the lock. At most max_puts packs are put at
        once; while that many are, a full open pack waits and callers wait with it: the store's pace holds the
        pipeline back, so memory stays at max_puts + 1 packs (DESIGN.md 13.2)."""
        added, i = 0, 0
        while True:
            pack = None
            with self._cond:
                while i < len(items):
                    if self._full():
                        if self._putting >= self.max_puts:
                            self._cond.wait()
                            continue
                        pack = self._take_open()
                        break
                    chunk, raw_size, value = items[i]
                    i += 1
                    if chunk not in self._open_ids:
                        self._open_ids.add(chunk)
                        self._append(chunk, raw_size, value)
                        added += 1
                else:
                    if self._full() and self._putting < self.max_puts:
                        pack = self._take_open()
                if pack is None:
                    return added
                self._putting += 1
            try:
                self._put(*pack)
            finally:
                with self._cond:
                    self._putting -= 1
                    self._cond.notify_all()

    def close(self, pack_id: bytes | None = None) -> None:
        """Puts the open pack, if it holds anything; pack_id: its id, chosen (and recorded) by the caller before
        (a replica transfer's, DESIGN.md 17.7), else a fresh random one."""
        with self._lock:
            full = self._take_open() if self._entries else None
        if full is not None:
            self._put(*full, pack_id=pack_id)

    def detach(self) -> tuple[PackBuffer, list[PackEntry]] | None:
        """The open pack's values and entries, handed to the caller to put later (put_detached), possibly while
        the next pack fills; None if it is empty."""
        with self._lock:
            return self._take_open() if self._entries else None

    def put_detached(self, pack: tuple[PackBuffer, list[PackEntry]], pack_id: bytes | None = None,
                     durable: bool = False) -> None:
        """durable: the pack is durable when this returns (store.put_durable), no flush() needed for it."""
        self._put(*pack, pack_id=pack_id, durable=durable)

    def take_rows(self, at_least: int = 0) -> list[Row]:
        """The rows of packs put so far (and forgets them), or [] while fewer than at_least are waiting."""
        with self._lock:
            if not self._rows or len(self._rows) < at_least:
                return []
            rows, self._rows = self._rows, []
            return rows

    def _append(self, chunk: bytes, raw_size: int, value) -> None:
        if self._data is None:
            spare, self._spare = self._spare, None
            self._data = PackBuffer(self.target_size + PACK_SLACK if self.target_size <= MAPPED_MAX else None, spare)
        self._entries.append(PackEntry(chunk, raw_size, len(self._data), len(value)))
        self._data.append(value)

    def _full(self) -> bool:
        return self._data is not None and len(self._data) >= self.target_size

    def _take_open(self) -> tuple[PackBuffer, list[PackEntry]]:
        data, entries = self._data, self._entries
        self._data, self._entries, self._open_ids = None, [], set()
        return data, entries

    def _put(self, data: PackBuffer, entries: list[PackEntry], pack_id: bytes | None = None,
             durable: bool = False) -> None:
        pack_id = pack_id or os.urandom(PACK_ID_SIZE)
        key = pack_key(self.vault_id, pack_id)
        data.append(pack_tail(self.codec, key, len(data), entries))  # in place: no second copy of the pack
        value = data.content()
        if not (self.store.put_durable(key, value) if durable else self.store.put(key, value)):
            raise FileExistsError(f"pack {key} exists already")  # 128 random bits: never in practice
        del value  # the store is done with the bytes: the mapping may serve the next pack
        with self._lock:
            self.packs_written += 1
            self.bytes_written += len(data)
            self._rows.extend((e.chunk, e.raw_size, e.length, pack_id, e.offset) for e in entries)
            if self._spare is None and data.mapped:
                self._spare = data


@dataclass(frozen=True)
class Location:
    pack_id: bytes | None  # None: a lone chunk under <vault>/chunks/ (before packs)
    offset: int
    length: int


class ChunkSource:
    """Stored chunk values by id, in batches: locations from the index (or, without one, from the vault's pack
    trailers, read once), then one ranged read per run of nearby chunks of a pack."""

    def __init__(self, store, codec: ChunkCodec, vault_id: str, index=None, views: bool = False):
        self.store = store
        # views: values are memoryviews of the ranged reads, not a copy each (taken with the GIL held, the
        # largest holder of it in a restore: DESIGN.md 10.3); for a caller that decodes them at once.
        self.views = views
        self.codec = codec
        self.vault_id = vault_id
        self.index = index
        self._trailers: dict[bytes, Location] | None = None
        self._primed: dict[bytes, Location] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.reads = 0
        self.phases = None  # a Phases, to time index lookups and store reads

    def prime(self, ids: Iterable[bytes]) -> None:
        """Looks up these ids' locations now, in batches, and keeps them (a restore that fetches one by one)."""
        self._primed.update(self.locate(ids))

    def locate(self, ids: Iterable[bytes]) -> dict[bytes, Location]:
        ids, primed = list(ids), self._primed
        found = {chunk: primed[chunk] for chunk in ids if chunk in primed} if primed else {}
        if found:
            ids = [chunk for chunk in ids if chunk not in found]
        if self.index is not None:
            found.update((chunk, Location(*where)) for chunk, where in self.index.locations(self.vault_id, ids).items())
            return found
        with self._lock:
            if self._trailers is None:
                self._trailers = self._read_trailers()
        found.update((chunk, self._trailers[chunk]) for chunk in ids if chunk in self._trailers)
        return found

    def _read_trailers(self) -> dict[bytes, Location]:
        found: dict[bytes, Location] = {}
        for key in self.store.iterate(pack_prefix(self.vault_id)):
            name = key.rpartition("/")[2]
            if len(name) != 2 * PACK_ID_SIZE:
                continue  # not a pack name pack_key() writes
            pack_id = bytes.fromhex(name)
            try:
                entries = read_pack_entries(self.store, self.codec, key)
            except (ChunkCorruptError, ChunkNotFoundError):
                continue  # torn or gone (a crash's orphan, a pack GC just deleted): its chunks are elsewhere
            for e in entries:
                found.setdefault(e.chunk, Location(pack_id, e.offset, e.length))
        return found

    def fetch_many(self, ids: Iterable[bytes], located: dict[bytes, Location] | None = None) -> dict[bytes, bytes]:
        """Stored values of the ids that have one; ids absent from the store are left out.

        located: locations looked up already (a restore's read-ahead); only the ids it lacks are looked up."""
        ids = set(ids)
        t0 = time.perf_counter()
        if located:
            where = {chunk: located[chunk] for chunk in ids if chunk in located}
            rest = ids.difference(where) if len(where) < len(ids) else ()
            if rest:
                where.update(self.locate(rest))
        else:
            where = self.locate(ids)
        t1 = time.perf_counter()
        values: dict[bytes, bytes] = {}
        by_pack: dict[bytes, list[tuple[int, int, bytes]]] = defaultdict(list)
        for chunk in ids:
            loc = where.get(chunk)
            if loc is None or loc.pack_id is None:
                value = self._lone(chunk)
                if value is not None:
                    values[chunk] = value
            else:
                by_pack[loc.pack_id].append((loc.offset, loc.length, chunk))
        for pack_id, wanted in by_pack.items():
            values.update(self.read_pack(pack_id, sorted(wanted)))
        if self.phases is not None:
            self.phases.add("index_lookup", t1 - t0)
            self.phases.add("store_read", time.perf_counter() - t1)
        return values

    def decode(self, values: dict[bytes, bytes], chunk: bytes, raw_size: int) -> bytes:
        """chunk's plaintext from values (what fetch_many returned), checked against its id (DESIGN.md 2): the one
        check every restore and every read out of a backup makes. ChunkMissingError if it has no value,
        ChunkCorruptError if the value is not that chunk's."""
        key = chunk_key(self.vault_id, chunk)
        value = values.get(chunk)
        if value is None:
            raise ChunkMissingError(key)
        return self.codec.decode(value, chunk, raw_size, key)

    def _lone(self, chunk: bytes) -> bytes | None:
        try:
            value = self.store.get(chunk_key(self.vault_id, chunk))
        except ChunkNotFoundError:
            return None
        self._count(len(value), 1)
        return value

    def read_pack(self, pack_id: bytes, wanted: list[tuple[int, int, bytes]]) -> dict[bytes, bytes]:
        """Values of (offset, length, chunk)s of one pack, sorted by offset: nearby ones merged into one read."""
        runs: list[list] = []  # [start, end, [(offset, length, chunk), ...]]
        for offset, length, chunk in wanted:
            if runs and offset - runs[-1][1] <= MERGE_GAP:
                runs[-1][1] = max(runs[-1][1], offset + length)
                runs[-1][2].append((offset, length, chunk))
            else:
                runs.append([offset, offset + length, [(offset, length, chunk)]])
        try:
            blobs = self.store.read_ranges(pack_key(self.vault_id, pack_id), [(r[0], r[1] - r[0]) for r in runs])
        except ChunkNotFoundError:
            return {}
        self._count(sum(len(b) for b in blobs), len(blobs))
        out = {}
        for (start, _end, members), blob in zip(runs, blobs):
            if self.views:
                blob = memoryview(blob)
            for offset, length, chunk in members:
                value = blob[offset - start:offset - start + length]
                if len(value) == length:
                    out[chunk] = value  # a short value is left out: missing, not silently cut
        return out

    def _count(self, nbytes: int, reads: int) -> None:
        with self._lock:
            self.bytes_read += nbytes
            self.reads += reads
