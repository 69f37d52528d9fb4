"""S3ChunkStore on radosgw beyond the contract suite (which runs there too, see tests/integration/chunkstore):
the store's own client, conditional writes as RGW honours them, and the RGW quirks the store steers around."""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

NS = "3f2c8a1e-0b7d-4c55-9e61-2a9d7f0c4b11"


def key(i: int) -> str:
    return f"{NS}/chunks/{i:064x}"


def test_store_made_from_settings_uses_conditional_writes(ceph):
    store = ceph.s3_store(prefix="cbr")  # its own client, from endpoint and keys
    with contextlib.closing(store):
        assert store.put(key(1), b"first") is True
        assert store.conditional_writes is True  # RGW answers If-None-Match: * on an existing key with 412
        assert store.put(key(1), b"second") is False
        assert store.get(key(1)) == b"first"
        assert list(store.iterate()) == [key(1)]  # the probe object is gone


def test_first_writer_wins_on_the_server(ceph):
    """Two stores (as two workers) race for one key: RGW lets exactly one PUT through."""
    bucket = ceph.new_bucket()
    stores = [ceph.s3_store(bucket, prefix="p", conditional_writes=True) for _ in range(2)]
    barrier = threading.Barrier(8)

    def put(i: int) -> bool:
        barrier.wait(timeout=30)
        return stores[i % 2].put(key(7), bytes([i]) * 4096)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, range(8)))
    assert results.count(True) == 1
    assert stores[0].get(key(7)) == bytes([results.index(True)]) * 4096
    for store in stores:
        store.close()


def test_rgw_quirks_the_store_avoids(ceph):
    """Ceph 16's radosgw, unlike AWS: If-Match with the quoted ETag fails, and CompleteMultipartUpload ignores
    If-None-Match and answers with an empty ETag. The store uses neither (one conditional PutObject per object);
    this test shows when a newer Ceph changes that."""
    with contextlib.closing(ceph.s3_client()) as client:
        bucket = ceph.new_bucket(client)
        etag = client.put_object(Bucket=bucket, Key="k", Body=b"v")["ETag"]
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=bucket, Key="k", Body=b"w", IfMatch=etag)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        client.put_object(Bucket=bucket, Key="k", Body=b"w", IfMatch=etag.strip('"'))

        upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        part = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
        done = client.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, IfNoneMatch="*",
                                                MultipartUpload={"Parts": [{"ETag": part, "PartNumber": 1}]})
        assert done["ETag"] == ""
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"  # overwritten despite "*"


def test_over_https_the_store_sends_no_checksum_trailers(ceph, monkeypatch):
    """boto3's default uploads (aws-chunked with a CRC32 trailer) are refused by radosgw 16 over HTTPS; the
    store asks for checksums only where an operation requires them, so its puts go through."""
    import boto3
    from botocore.config import Config

    from cbr_backup.chunkstore import S3ChunkStore

    monkeypatch.setenv("AWS_CA_BUNDLE", str(ceph.cluster.tls_certificate))  # the cluster's self-signed one
    bucket = ceph.new_bucket()
    endpoint = ceph.cluster.rgw_tls_endpoint
    defaults = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                              config=Config(s3={"addressing_style": "path"}), **ceph.credentials)
    with contextlib.closing(defaults), pytest.raises(ClientError) as refused:
        defaults.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert refused.value.response["Error"]["Code"] == "MissingContentLength"

    store = S3ChunkStore(bucket, endpoint_url=endpoint, region_name="us-east-1", **ceph.credentials)
    with contextlib.closing(store):
        assert store.put(key(1), b"over TLS") is True
        assert store.put(key(1), b"again") is False
        assert store.get(key(1)) == b"over TLS"
