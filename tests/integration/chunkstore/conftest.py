"""Chunk store fixtures: one store per backend; the S3 store against two real local servers, moto's server mode
(a mock, quick) and radosgw of a real single-node Ceph cluster (started once per session when asked for)."""
from __future__ import annotations

import contextlib
import uuid

import pytest

from cbr_backup.chunkstore import FsChunkStore, MemoryChunkStore


@pytest.fixture(scope="session")
def s3_client(s3_server):
    # One client for all contract tests: making one loads botocore's models, which takes a good part of a
    # second. test_s3_store covers stores that make their own.
    with contextlib.closing(s3_server.client()) as client:
        yield client


@pytest.fixture(scope="session")
def rgw_client(ceph):
    with contextlib.closing(ceph.s3_client()) as client:
        yield client


@pytest.fixture(scope="session")
def rgw_bucket(ceph, rgw_client):
    return ceph.new_bucket(rgw_client)  # tests share it; each store has a prefix of its own


@pytest.fixture(params=["memory", "fs", "s3", "rgw"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryChunkStore()
    if request.param == "fs":
        return FsChunkStore(tmp_path / "store")
    if request.param == "s3":
        return request.getfixturevalue("s3_server").store(client=request.getfixturevalue("s3_client"))
    return request.getfixturevalue("ceph").s3_store(
        request.getfixturevalue("rgw_bucket"), client=request.getfixturevalue("rgw_client"),
        prefix=f"test-{uuid.uuid4().hex}/")
