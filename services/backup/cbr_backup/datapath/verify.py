"""Verification of a vault's chunks: each is read back and decoded as a restore would; bad ones are quarantined.

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
from cbr_backup.datapath.disk_backup import chunk_key
from cbr_backup.datapath.errors import ChunkCorruptError

VERIFY_BATCH = 256   # ids per index lookup, per progress call
VERIFY_WORKERS = 4   # reads and decodes release the GIL (file I/O, zstd, AES, BLAKE3)


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
    """
    t0 = time.perf_counter()
    todo = sorted(set(ids))
    codec = ChunkCodec(keys, dictionaries=VaultDictionaries(store, vault_id, keys).by_tag)
    bad: dict[bytes, str] = {}
    quarantined = 0
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="cbr-verify") as pool:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            indexed = index.sizes(vault_id, part)
            sizes = {chunk: _raw_size(chunk, raw_sizes, indexed) for chunk in part}
            problems = pool.map(lambda chunk: check_chunk(store, codec, vault_id, chunk, sizes[chunk]), part)
            found = {chunk: problem for chunk, problem in zip(part, problems) if problem is not None}
            bad.update(found)
            doomed = [chunk for chunk in found if chunk in indexed]
            if quarantine and doomed:
                quarantined += index.forget(
                    vault_id, doomed, on_locked=lambda present: _quarantine(store, codec, vault_id, present, sizes))
            if progress is not None:
                progress(start + len(part), len(todo))
    if quarantined:
        store.flush()  # the quarantined copies are worth keeping for an operator to look at
    return VerifyResult(checked_chunks=len(todo), bad_chunks=bad, quarantined=quarantined,
                        seconds=time.perf_counter() - t0)


def check_chunk(store, codec: ChunkCodec, vault_id: str, chunk: bytes, raw_size: int | None) -> str | None:
    """None if the chunk's stored value decodes to it; otherwise what is wrong."""
    key = chunk_key(vault_id, chunk)
    try:
        value = store.get(key)
    except ChunkNotFoundError:
        return "missing"
    if raw_size is None:
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


def _quarantine(store, codec: ChunkCodec, vault_id: str, present: set[bytes], sizes: dict) -> list[bytes]:
    """Runs while the rows of present are locked: the ids whose rows should go, their values moved aside."""
    doomed = []
    for chunk in sorted(present):
        if check_chunk(store, codec, vault_id, chunk, sizes[chunk]) is None:
            continue  # sound now (replaced since it was read): keep it
        key = chunk_key(vault_id, chunk)
        try:
            store.put(quarantine_key(vault_id, chunk), store.get(key))  # an earlier quarantined copy wins
        except ChunkNotFoundError:
            pass
        store.delete(key)
        doomed.append(chunk)
    return doomed
