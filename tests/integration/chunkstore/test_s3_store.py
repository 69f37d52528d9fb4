"""S3ChunkStore beyond the contract, against the local moto server: batching, conditional writes, prefixes."""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cbr_backup.chunkstore import ChunkNotFoundError, StoreFullError

NS = "3f2c8a1e-0b7d-4c55-9e61-2a9d7f0c4b11"


def key(i: int) -> str:
    return f"{NS}/chunks/{i:064x}"


class RequestCounter:
    def __init__(self, client):
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3", self._count)

    def _count(self, request, **kwargs):
        operation = kwargs["event_name"].rsplit(".", 1)[-1]
        with self._lock:
            self.counts[operation] = self.counts.get(operation, 0) + 1

    def total(self) -> int:
        return sum(self.counts.values())


@pytest.fixture
def client(s3_server):
    with contextlib.closing(s3_server.client()) as client:
        yield client


def put_range(store, numbers) -> None:
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda i: store.put(key(i), b"v"), numbers))


def test_store_made_from_settings(s3_server):
    store = s3_server.store()  # makes its own client from endpoint and credentials
    with contextlib.closing(store):
        assert store.conditional_writes is None
        assert store.put(key(1), b"v") is True
        assert store.conditional_writes is True  # moto honours If-None-Match: *
        assert store.put(key(1), b"w") is False
        assert store.get(key(1)) == b"v"
        assert list(store.iterate()) == [key(1)]  # the probe object is gone and never listed


def test_exists_many_lists_dense_folders(s3_server, client):
    store = s3_server.store(client=client, conditional_writes=True)
    put_range(store, range(0, 2400, 2))
    counter = RequestCounter(client)
    assert store.exists_many(key(i) for i in range(2400)) == {key(i) for i in range(0, 2400, 2)}
    assert counter.counts.get("HeadObject", 0) == 0
    assert counter.counts["ListObjectsV2"] == 2  # 1,200 objects in pages of 1,000


def test_exists_many_heads_sparse_keys(s3_server, client):
    store = s3_server.store(client=client, conditional_writes=True)
    put_range(store, range(1200))
    # 32 keys, 8 of them spread over the first 1,000 objects: one page settles too few to go on listing.
    asked = [key(i) for i in range(0, 1000, 125)] + [key(i) for i in range(5000, 5024)]
    counter = RequestCounter(client)
    assert store.exists_many(asked) == {key(i) for i in range(0, 1000, 125)}
    assert counter.counts == {"ListObjectsV2": 1, "HeadObject": 24}


def test_exists_many_small_batches_use_heads(s3_server, client):
    store = s3_server.store(client=client, conditional_writes=True)
    put_range(store, range(5))
    counter = RequestCounter(client)
    assert store.exists_many([key(i) for i in range(10)]) == {key(i) for i in range(5)}
    assert counter.counts == {"HeadObject": 10}


def test_put_is_one_conditional_request(s3_server, client):
    store = s3_server.store(client=client, conditional_writes=True)
    counter = RequestCounter(client)
    assert store.put(key(1), b"v") is True
    assert store.put(key(1), b"v") is False  # a 412 from the server, not a HEAD first
    assert counter.counts == {"PutObject": 2}


def test_server_ignoring_if_none_match_is_detected(s3_server, client):
    def drop_condition(request, **kwargs):
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    client.meta.events.register("before-sign.s3.PutObject", drop_condition)
    store = s3_server.store(client=client)
    assert store.put(key(1), b"first") is True
    assert store.conditional_writes is False
    assert store.put(key(1), b"second") is False  # HEAD before PUT
    assert store.get(key(1)) == b"first"

    threads = 8
    barrier = threading.Barrier(threads)

    def put(i: int) -> bool:
        barrier.wait(timeout=30)
        return store.put(key(2), bytes([i]) * 1000)

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(put, range(threads)))
    assert results.count(True) == 1
    assert store.get(key(2)) == bytes([results.index(True)]) * 1000
    assert sorted(store.iterate()) == [key(1), key(2)]


def test_prefixes_isolate_stores_in_one_bucket(s3_server, client):
    first = s3_server.store(client=client, prefix="tenant-a")  # a "/" is added
    second = s3_server.store(client=client, prefix="tenant-a-2/")
    assert first.prefix == "tenant-a/"
    assert first.put(key(1), b"a") is True
    assert second.put(key(1), b"b") is True
    assert first.get(key(1)) == b"a"
    assert list(second.iterate()) == [key(1)]
    first.delete(key(1))
    assert second.get(key(1)) == b"b"
    with pytest.raises(ChunkNotFoundError):
        first.get(key(1))
    second.delete(key(1))


def test_iterate_pages_through_many_objects(s3_server, client):
    store = s3_server.store(client=client, conditional_writes=True)
    put_range(store, range(1100))
    counter = RequestCounter(client)
    walk = store.iterate(f"{NS}/chunks/")
    first = next(walk)
    assert counter.counts == {"ListObjectsV2": 1}  # lazily: one page so far
    assert {first, *walk} == {key(i) for i in range(1100)}
    assert counter.counts == {"ListObjectsV2": 2}


@pytest.mark.parametrize("code,status", [("QuotaExceeded", 403), ("XMinioStorageFull", 507),
                                         ("InsufficientStorage", 507)])
def test_a_server_out_of_room_is_store_full(s3_server, client, code, status):
    """A quota or a full server answers the PUT with an error that a retry cannot cure: StoreFullError, as the
    file-system store's ENOSPC. Other errors stay what they were."""
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber
    store = s3_server.store(client=client, conditional_writes=True)
    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StoreFullError) as caught:
            store.put(key(1), b"v")
        assert caught.value.cbr_code == "BackupService.6762"
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(ClientError):
            store.put(key(1), b"v")
