"""Verification of a vault's chunks: each is read back and decoded as a restore would; bad ones are quarantined.
Patched blocks (DESIGN.md 3.1) are then put together from their base and patch and checked against their ids.

A bad chunk that keeps its index row is worse than a missing one: every later backup of the same data finds
the row and reuses the damaged value without reading it. Quarantine therefore takes the row away (after
moving the value aside), so the next backup that meets that block stores it again (DESIGN.md, "Verify").
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cbr_backup.chunkstore import ChunkNotFoundError
from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys
from cbr_backup.datapath.dictionary import VaultDictionaries
from cbr_backup.datapath.packs import ChunkSource, chunk_key
from cbr_backup.datapath.errors import ChunkCorruptError
from cbr_backup.datapath.manifest import Patch, patch_length
from cbr_backup.datapath.patches import apply_patch, check_block

VERIFY_BATCH = 256   # ids per index lookup, per progress call
VERIFY_WORKERS = 4   # reads and decodes release the GIL (file I/O, zstd, AES, BLAKE3)
PATCHED_BATCH = 64   # patched blocks per batch: their bases' and patches' plaintexts are held together


@dataclass(frozen=True)
class VerifyResult:
    checked_chunks: int           # distinct ids checked
    bad_chunks: dict[bytes, str]  # id -> "missing" | "corrupt: <reason>"
    quarantined: int              # bad chunks whose index row was taken away (their values moved aside)
    seconds: float

    def summary(self) -> dict:
        return {"checked_chunks": self.checked_chunks, "bad_chunks": len(self.bad_chunks),
                "quarantined": self.quarantined, "seconds": round(self.seconds, 3)}


def quarantine_key(vault_id: str, chunk: bytes) -> str:
    return f"{vault_id}/quarantine/{chunk.hex()}"


def verify_chunks(index, store, keys: VaultKeys, vault_id: str, ids: Iterable[bytes], *,
                  raw_sizes: dict[bytes, int] | None = None, quarantine: bool = True,
                  progress: Callable[[int, int], None] | None = None,
                  workers: int = VERIFY_WORKERS, batch: int = VERIFY_BATCH) -> VerifyResult:
    """Reads and decodes every distinct id's stored value (the checks of DESIGN.md section 2).

    A chunk is "missing" when the store has no value for it, or when the index has no row for it and
    raw_sizes does not give its size either (nothing says what it should decode to); "corrupt: <reason>"
    when its value fails to decode. raw_sizes (e.g. from the manifests) wins over the index's raw_size.

    quarantine: a bad chunk that has an index row is re-checked while its row is locked, its value (if any)
    copied to `<vault>/quarantine/<hex>`, its chunk key deleted and its row deleted, in that order and under
    the row lock, so no backup can find the row while the value goes. A bad chunk without a row is only
    reported: a backup never reuses an unindexed value without decoding it first, and one may be replacing
    it right now (so deleting it could take away that backup's good copy).
    progress(done, total) is called after each batch; an exception it raises stops the run and propagates
    (batches already quarantined stay so).
    A vault dictionary that is present but fails its own check raises ManifestCorruptError: that is not
    the chunks' fault, and nothing is quarantined for it.
    The caller holds the vault's lock shared (as a backup does): GC's repack moves live chunks to new packs
    only under the exclusive lock, and a chunk moved while verify read it would look missing.
    """
    t0 = time.perf_counter()
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
    bad: dict[bytes, str] = {}
    quarantined = 0
    source = ChunkSource(store, codec, vault_id, index)
    todo = _in_store_order(source, sorted(set(ids)))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cbr-verify") as pool:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            indexed = index.sizes(vault_id, part)
            sizes = {chunk: _raw_size(chunk, raw_sizes, indexed) for chunk in part}
            values = source.fetch_many(part)  # nearby chunks of a pack in one ranged read (DESIGN.md 13.3)
            problems = pool.map(lambda chunk: check_value(codec, vault_id, chunk, values.get(chunk), sizes[chunk]),
                                part)
            found = {chunk: problem for chunk, problem in zip(part, problems) if problem is not None}
            bad.update(found)
            doomed = [chunk for chunk in found if chunk in indexed]
            if quarantine and doomed:
                where = source.locate(doomed)  # before the rows are locked: the index is one connection
                quarantined += index.forget(vault_id, doomed, on_locked=lambda present: _quarantine(
                    store, codec, vault_id, present, sizes, values, where))
            if progress is not None:
                progress(start + len(part), len(todo))
    if quarantined:
        store.flush()  # the quarantined copies are worth keeping for an operator to look at
    return VerifyResult(checked_chunks=len(todo), bad_chunks=bad, quarantined=quarantined,
                        seconds=time.perf_counter() - t0)


def verify_patched_blocks(index, store, keys: VaultKeys, vault_id: str, blocks: dict[tuple[bytes, Patch], int], *,
                          workers: int = VERIFY_WORKERS, batch: int = PATCHED_BATCH) -> dict[tuple[bytes, Patch], str]:
    """Checks that each patched block's base with its patch laid over it is the block (its keyed BLAKE3 is the
    block's id), as a restore would; blocks: (block id, patch) -> block length, as manifest.patched_blocks()
    gives them. Returns (block id, patch) -> what is wrong. A base or patch that is missing or does not decode
    is reported here too (verify_chunks reports and quarantines the chunk itself); a block whose chunks are
    each sound but do not make it is a bad manifest entry, which no chunk stored again can mend, so nothing
    is quarantined."""
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
    source = ChunkSource(store, codec, vault_id, index)
    todo = sorted(blocks)
    bad: dict[tuple[bytes, Patch], str] = {}

    def check(entry: tuple[bytes, Patch], values: dict[bytes, bytes]) -> str | None:
        (block_id, patch), length = entry, blocks[entry]
        parts = []
        for what, chunk, size in (("base", patch.base, length),
                                  ("patch", patch.chunk, patch_length(patch.pages, length))):
            if values.get(chunk) is None:
                return f"{what} {chunk.hex()} missing"
            try:
                parts.append(codec.decode(values[chunk], chunk, size, chunk_key(vault_id, chunk)))
            except ChunkCorruptError as exc:
                return f"{what} {chunk.hex()} corrupt: {exc.reason}"
        block = bytearray(length)
        apply_patch(block, 0, parts[0], parts[1], patch.pages, length)
        try:
            check_block(block, block_id, keys.id_key)
        except ChunkCorruptError as exc:
            return f"corrupt: {exc.reason}"
        return None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cbr-verify") as pool:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            values = source.fetch_many({chunk for _, patch in part for chunk in (patch.base, patch.chunk)})
            for entry, problem in zip(part, pool.map(lambda e: check(e, values), part)):
                if problem is not None:
                    bad[entry] = problem
    return bad


def _in_store_order(source: ChunkSource, ids: list[bytes], window: int = 65536) -> list[bytes]:
    """ids ordered by (pack, offset) within windows of ids, so a batch's chunks sit together in few packs and
    come in few ranged reads (DESIGN.md 13.3); lone chunks first."""
    ordered: list[bytes] = []
    for start in range(0, len(ids), window):
        part = ids[start:start + window]
        where = source.locate(part)
        ordered.extend(sorted(part, key=lambda chunk: (where[chunk].pack_id or b"", where[chunk].offset)
                              if chunk in where else (b"", -1)))
    return ordered


def check_value(codec: ChunkCodec, vault_id: str, chunk: bytes, value: bytes | None,
                raw_size: int | None) -> str | None:
    """None if the chunk's stored value (None: not found) decodes to it; otherwise what is wrong."""
    key = chunk_key(vault_id, chunk)
    if value is None or raw_size is None:
        return "missing"
    try:
        codec.decode(value, chunk, raw_size, key)
    except ChunkCorruptError as exc:
        return f"corrupt: {exc.reason}"
    return None


def _raw_size(chunk: bytes, raw_sizes: dict[bytes, int] | None, indexed: dict[bytes, int]) -> int | None:
    if raw_sizes is not None and chunk in raw_sizes:
        return raw_sizes[chunk]
    return indexed.get(chunk)


def _quarantine(store, codec: ChunkCodec, vault_id: str, present: set[bytes], sizes: dict,
                values: dict[bytes, bytes], where: dict) -> list[bytes]:
    """Runs while the rows of present are locked: the ids whose rows should go, their values copied aside.

    A lone chunk (before packs) is read again (a backup may have replaced it since) and its key deleted; a
    packed value never changes in place, so the value read is the one copied, and the pack is left to GC
    (it no longer counts the chunk as live). where: locations looked up before the rows were locked."""
    doomed = []
    for chunk in sorted(present):
        loc = where.get(chunk)
        lone = loc is None or loc.pack_id is None
        key = chunk_key(vault_id, chunk)
        value = values.get(chunk)
        if lone:
            try:
                value = store.get(key)
            except ChunkNotFoundError:
                value = None
        if check_value(codec, vault_id, chunk, value, sizes[chunk]) is None:
            continue  # sound now (replaced since it was read): keep it
        if value is not None:
            store.put(quarantine_key(vault_id, chunk), value)  # an earlier quarantined copy wins
        if lone:
            store.delete(key)
        doomed.append(chunk)
    return doomed
