"""The ChunkStore contract: one suite, run against the memory, file system and S3 backends."""
from __future__ import annotations

import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cbr_backup.chunkstore import ChunkNotFoundError, ChunkStore

NS = "3f2c8a1e-0b7d-4c55-9e61-2a9d7f0c4b11"
OTHER_NS = "9a1d0c3e-5f7b-4e2a-8c6d-1b0e9f8a7c65"


def chunk_key(data: bytes, ns: str = NS) -> str:
    return f"{ns}/chunks/{hashlib.sha256(data).hexdigest()}"


def numbered_key(i: int, ns: str = NS) -> str:
    return chunk_key(i.to_bytes(4, "big"), ns)


def put_many(store: ChunkStore, items: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda kv: store.put(*kv), items.items()))


def test_is_a_chunk_store(store):
    assert isinstance(store, ChunkStore)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", bytes(range(256)) * 3, random.Random(7).randbytes(4 * 1024 * 1024)],
    ids=["empty", "one-zero-byte", "all-byte-values", "4MiB"],
)
def test_put_get_round_trip(store, data):
    key = chunk_key(data)
    assert store.put(key, data) is True
    got = store.get(key)
    assert type(got) is bytes
    assert got == data


def test_put_accepts_any_bytes_buffer(store):
    buffer = bytearray(b"abc" * 100)
    assert store.put(f"{NS}/chunks/aa01", buffer)
    assert store.put(f"{NS}/chunks/aa02", memoryview(buffer)[3:9])
    buffer[:3] = b"xyz"  # the store kept its own copy
    assert store.get(f"{NS}/chunks/aa01") == b"abc" * 100
    assert store.get(f"{NS}/chunks/aa02") == b"abcabc"
    with pytest.raises(TypeError):
        store.put(f"{NS}/chunks/aa03", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put(f"{NS}/chunks/aa04", 5)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["put", "put_durable"])
def test_put_is_idempotent_and_first_writer_wins(store, method):
    """put_durable is a put (durable when it returns): the same first-writer rule, either way round."""
    key = f"{NS}/manifests/4b0e9a2c-7d1f-4a3b-9c8e-6f5d2e1a0b97"
    put, other = getattr(store, method), store.put_durable if method == "put" else store.put
    assert put(key, b"first") is True
    assert put(key, b"first") is False
    assert other(key, b"second, different") is False
    assert store.get(key) == b"first"


def test_get_missing_raises_chunk_not_found(store):
    key = f"{NS}/chunks/{'0' * 64}"
    with pytest.raises(ChunkNotFoundError) as caught:
        store.get(key)
    assert caught.value.key == key
    assert isinstance(caught.value, LookupError)


def test_read_ranges(store):
    """Ranged reads of one value (a pack's chunks): in order, a negative offset from the end, short past the end."""
    key = f"{NS}/packs/{'ab' * 16}"
    data = random.Random(3).randbytes(300_000)
    assert store.put(key, data)
    ranges = [(0, 10), (299_990, 10), (100_000, 65_536), (-24, 24), (5, 1), (299_995, 100), (400_000, 10)]
    got = store.read_ranges(key, ranges)
    assert all(type(part) is bytes for part in got)
    assert got == [data[0:10], data[-10:], data[100_000:165_536], data[-24:], data[5:6], data[-5:], b""]
    with pytest.raises(ChunkNotFoundError):
        store.read_ranges(f"{NS}/packs/{'cd' * 16}", [(0, 10)])
    with pytest.raises(ValueError):
        store.read_ranges("ns/packs/../x", [(0, 1)])


def test_a_pack_round_trip_through_the_store(store):
    """A pack written by PackWriter is read back from its trailer alone and by batched ranged reads."""
    import os
    from cbr_backup.datapath.chunk_codec import ChunkCodec, VaultKeys, chunk_id
    from cbr_backup.datapath.packs import ChunkSource, PackWriter, read_pack_entries
    keys = VaultKeys(os.urandom(32), os.urandom(32))
    codec = ChunkCodec(keys)
    writer = PackWriter(store, codec, NS, target_size=1 << 20)
    blocks = [random.Random(i).randbytes(100_000) for i in range(25)]  # ~2.5 MB: three packs
    for block in blocks:
        chunk = chunk_id(block, keys.id_key)
        writer.add(chunk, len(block), codec.encode(block, chunk))
    writer.close()
    rows = writer.take_rows()
    packs = sorted(store.iterate(f"{NS}/packs/"))
    assert writer.packs_written == len(packs) == 3 and len(rows) == 25
    assert sum(len(read_pack_entries(store, codec, key)) for key in packs) == 25
    source = ChunkSource(store, codec, NS)  # no index: the trailers say where each chunk is
    values = source.fetch_many(row[0] for row in rows)
    assert {chunk: codec.decode(values[chunk], chunk, raw) for chunk, raw, *_ in rows} == {
        chunk_id(block, keys.id_key): block for block in blocks}
    assert source.reads == 3  # adjacent chunks of a pack in one ranged read each


def test_exists_many_with_a_mix(store):
    present = [chunk_key(bytes([i])) for i in range(5)]
    absent = [chunk_key(bytes([i]), OTHER_NS) for i in range(5)] + [f"{NS}/chunks/{'f' * 64}"]
    for key in present:
        store.put(key, b"x")
    asked = present + absent + present[:2]  # duplicates are fine
    assert store.exists_many(iter(asked)) == set(present)  # any iterable, even a one-shot generator
    assert store.exists_many([]) == set()
    assert store.exists_many(absent) == set()


def test_exists_many_with_2000_keys(store):
    keys = [numbered_key(i) for i in range(2000)]
    present = keys[::2]
    put_many(store, {key: key[-8:].encode() for key in present})
    put_many(store, {numbered_key(i, OTHER_NS): b"y" for i in range(1, 200, 2)})  # same ids, other vault
    assert store.exists_many(keys) == set(present)


def test_delete(store):
    key, other = numbered_key(1), numbered_key(2)
    store.put(key, b"doomed")
    store.put(other, b"stays")
    store.delete(key)
    with pytest.raises(ChunkNotFoundError):
        store.get(key)
    assert store.exists_many([key, other]) == {other}
    store.delete(key)  # absent: no error
    store.delete(numbered_key(3))  # never existed: no error
    assert store.get(other) == b"stays"
    assert store.put(key, b"again") is True  # a deleted key can be written anew
    assert store.get(key) == b"again"


ITERATE_KEYS = [
    f"{NS}/chunks/ab{'0' * 62}",
    f"{NS}/chunks/ab{'1' * 62}",
    f"{NS}/chunks/cd{'2' * 62}",
    f"{NS}/manifests/4b0e9a2c-7d1f-4a3b-9c8e-6f5d2e1a0b97",
    f"{NS}/manifests/b1",
    f"{NS}x/chunks/ab{'3' * 62}",  # a namespace that shares a string prefix with NS
    f"{OTHER_NS}/chunks/ab{'0' * 62}",
    # short and mixed-depth keys: a file system backend must not confuse a key with another key's folder
    "ab",
    "a",
    "ab/ab",
    "ab/ab/ab",
    "ab/ab/ab/ab",
    "ab/abc",
    "a/b/c/d",
]


def test_iterate_by_prefix(store):
    for key in ITERATE_KEYS:
        assert store.put(key, key.encode())

    def listed(prefix: str = "") -> set[str]:
        keys = list(store.iterate(prefix))
        assert len(keys) == len(set(keys))  # each key once
        return set(keys)

    def expected(prefix: str) -> set[str]:
        return {key for key in ITERATE_KEYS if key.startswith(prefix)}

    assert listed() == set(ITERATE_KEYS)
    for prefix in [
        f"{NS}/",
        f"{NS}/chunks/",
        f"{NS}/chunks/ab",
        f"{NS}/chunks/a",
        f"{NS}/chunks/ab1",
        f"{NS}/manifests/",
        f"{NS}/manifests/b",
        f"{NS}/cha",
        NS,
        f"{OTHER_NS}/",
        "ab",
        "ab/",
        "ab/ab",
        "ab/ab/",
        "ab/ab/ab/",
        "a",
        "a/",
        "a/b/c/",
        "zz",
        "zz/",
    ]:
        assert listed(prefix) == expected(prefix), prefix
    for key in ITERATE_KEYS:
        assert store.get(key) == key.encode()


def test_iterate_streams_and_tolerates_deletes(store):
    keys = {numbered_key(i) for i in range(50)}
    put_many(store, {key: b"v" for key in keys})
    walk = store.iterate(f"{NS}/chunks/")
    assert iter(walk) is walk  # an iterator, not a list
    seen = set()
    for key in walk:
        seen.add(key)
        store.delete(key)  # deleting while walking is allowed
    assert seen == keys
    assert set(store.iterate()) == set()


BAD_KEYS = [
    "../x",
    "/abs",
    "a//b",
    "a/b/c/d/e",
    "",
    "ns/chunks/zz zz",
    "k" * 600,
    "ns/chunks/",
    "ns/../x",
    "ns/chunks/ab.tmp-0123",
    ".",
    "ns\\chunks\\ab",
    "ns/chunks/ab\n",
    "ns/chunks/\u00e9t\u00e9",
    "ns/chunks/ab\x00",
]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_bad_keys_are_rejected(store, bad):
    with pytest.raises(ValueError):
        store.put(bad, b"x")
    with pytest.raises(ValueError):
        store.get(bad)
    with pytest.raises(ValueError):
        store.exists_many([numbered_key(1), bad])
    with pytest.raises(ValueError):
        store.delete(bad)
    if bad and bad != "ns/chunks/":  # those two are fine prefixes
        with pytest.raises(ValueError):
            store.iterate(bad)  # raises at the call, before any iteration
    assert set(store.iterate()) == set()


def test_key_length_limit(store):
    longest = "/".join(["k" * 200, "k" * 200, "k" * 110])  # 512 characters, segments at their limit
    assert store.put(longest, b"x") is True
    assert store.get(longest) == b"x"
    assert set(store.iterate()) == {longest}
    for too_long in [longest + "k", "n/" + "k" * 201]:
        with pytest.raises(ValueError):
            store.put(too_long, b"x")
    with pytest.raises(TypeError):
        store.get(b"ns/chunks/ab")  # type: ignore[arg-type]


@pytest.mark.parametrize("same_content", [True, False], ids=["same-content", "different-content"])
def test_concurrent_puts_of_one_key(store, same_content):
    threads = 8
    for round_ in range(3):
        key = numbered_key(round_)
        values = [
            (b"chunk" if same_content else bytes([i])) * (64 * 1024 + round_) for i in range(threads)
        ]
        barrier = threading.Barrier(threads)

        def put(value: bytes) -> bool:
            barrier.wait(timeout=30)
            return store.put(key, value)

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(put, values))
        assert results.count(True) == 1, results
        assert store.get(key) == values[results.index(True)]
    assert set(store.iterate()) == {numbered_key(i) for i in range(3)}


def test_flush(store):
    store.flush()  # nothing written yet
    items = {numbered_key(i): bytes([i]) * 1000 for i in range(20)}
    put_many(store, items)
    store.flush()
    store.flush()
    for key, value in items.items():
        assert store.get(key) == value


def test_remove_stale_temp_files_never_touches_values(store):
    items = {numbered_key(i): bytes([i]) * 100 for i in range(5)}
    put_many(store, items)
    assert store.remove_stale_temp_files(f"{NS}/", older_than_s=0) == 0  # every put finished: nothing is stale
    assert store.remove_stale_temp_files() == 0
    assert {key: store.get(key) for key in items} == items
    with pytest.raises(ValueError):
        store.remove_stale_temp_files("../")
