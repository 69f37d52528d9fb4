"""The vault's zstd dictionary: a sample of the vault's own compressible blocks that every chunk is
compressed against, so that a 64 KiB block compresses about as well as it would inside a much larger
window (redundancy between blocks, not only within one). Measured numbers are in DESIGN.md, "Compression".

A dictionary is raw content (no trained entropy tables): stored once per vault under
`<vault>/dicts/<id hex>`, sealed like a manifest and checked against its keyed id when loaded. Chunks name
it by a 32-bit tag (the first 4 bytes of its id). The first backup of a vault makes it; later backups use
the vault's dictionary with the smallest key (two first backups racing may make two; both stay readable).
Dictionaries are never garbage-collected while the vault exists: chunks may need them.
"""
from __future__ import annotations

import threading

import zstandard

from cbr_backup.datapath.blockio import AlignedBuffer, DiskFile, read_at
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys, dictionary_tag
from cbr_backup.datapath.errors import ManifestCorruptError

DICTIONARY_SIZE = 1 << 20
MIN_DICTIONARY_SIZE = 64 << 10
# A sampled piece joins the dictionary only if zstd level 1 alone gets it below this share of its size:
# incompressible blocks would only make the dictionary bigger and slower.
_COMPRESSIBLE = 0.75
_CANDIDATES_PER_PIECE = 3  # candidates read per piece the dictionary needs
SAMPLE_UNIT = 128 << 10  # the dictionary is sampled in pieces of this size (at most a block)


def dictionaries_prefix(vault_id: str, namespace_id: str = "") -> str:
    """Where a vault's dictionaries live; a replica namespace's (keyed by its own id key) apart (DESIGN.md 17.4),
    in four key segments as every store key."""
    return f"{vault_id}/nsdicts/{namespace_id}/" if namespace_id else f"{vault_id}/dicts/"


class VaultDictionaries:
    """Finds, loads (cached) and creates a vault's dictionaries in its chunk store."""

    def __init__(self, store, vault_id: str, keys: VaultKeys):
        self.store = store
        self.prefix = dictionaries_prefix(vault_id, getattr(keys, "namespace_id", ""))
        self._codec = ChunkCodec(keys)
        self._by_tag: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def current(self) -> tuple[int, bytes] | None:
        """(tag, content) of the dictionary new chunks should use, or None if the vault has none yet."""
        keys = sorted(self.store.iterate(self.prefix))
        if not keys:
            return None
        return self._load(keys[0])

    def by_tag(self, tag: int) -> bytes | None:
        content = self._by_tag.get(tag)
        if content is not None:
            return content
        with self._lock:
            if tag not in self._by_tag:
                for key in self.store.iterate(self.prefix):
                    suffix = key[len(self.prefix):]
                    if len(suffix) == 64 and dictionary_tag(bytes.fromhex(suffix)) == tag:
                        self._load(key)
                        break
            return self._by_tag.get(tag)

    def create(self, content: bytes) -> tuple[tuple[int, bytes], int]:
        """Stores content as a dictionary; returns ((tag, content), bytes added to the store)."""
        dict_id = self._codec.chunk_id(content)
        key = self.prefix + dict_id.hex()
        value = self._codec.seal(content, key.encode())
        created = self.store.put(key, value)
        tag = dictionary_tag(dict_id)
        self._by_tag[tag] = content
        return (tag, content), (len(value) if created else 0)

    def _load(self, key: str) -> tuple[int, bytes]:
        from cbr_backup.chunkstore import ChunkNotFoundError
        try:
            value = self.store.get(key)
        except ChunkNotFoundError:
            raise ManifestCorruptError(f"compression dictionary {key} is missing") from None
        content = self._codec.unseal(value, key.encode(), key)
        dict_id = bytes.fromhex(key[len(self.prefix):])
        if self._codec.chunk_id(content) != dict_id:
            raise ManifestCorruptError(f"compression dictionary {key} does not match its id")
        tag = dictionary_tag(dict_id)
        self._by_tag[tag] = content
        return tag, content


def sample_dictionary(disk: DiskFile, block_ranges: list[tuple[int, int]], block_size: int, disk_size: int,
                      size: int = DICTIONARY_SIZE) -> bytes | None:
    """Up to size bytes of compressible pieces (SAMPLE_UNIT each, or the block if smaller), read at evenly
    spaced places among the allocated blocks (deterministic, so the same disk gives the same dictionary); None
    if the disk has too few. Pieces smaller than a large block keep the dictionary varied: one 1 MiB block would
    be one file's worth of content."""
    unit = min(block_size, SAMPLE_UNIT)
    per_block = block_size // unit
    total = sum(end - first for first, end in block_ranges) * per_block
    wanted = max(1, size // unit)
    if total == 0:
        return None
    candidates = min(total, wanted * _CANDIDATES_PER_PIECE)
    stride = total / candidates
    probe = zstandard.ZstdCompressor(level=1)
    buffer = AlignedBuffer(unit)
    sample = bytearray()
    try:
        for k in range(candidates):
            n = int(k * stride)
            offset = _nth_block(block_ranges, n // per_block) * block_size + (n % per_block) * unit
            length = min(unit, disk_size - offset)
            if length <= 0:
                continue
            got = read_at(disk, buffer.view, offset, length)
            piece = bytes(buffer.view[:got])
            if not piece.strip(b"\x00"):
                continue
            if len(probe.compress(piece)) < _COMPRESSIBLE * len(piece):
                sample += piece
                if len(sample) >= size:
                    break
    finally:
        buffer.close()
    return bytes(sample[:size]) if len(sample) >= MIN_DICTIONARY_SIZE else None


def _nth_block(block_ranges: list[tuple[int, int]], n: int) -> int:
    for first, end in block_ranges:
        if n < end - first:
            return first + n
        n -= end - first
    raise IndexError(n)
