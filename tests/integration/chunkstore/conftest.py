"""Chunk store fixtures: a real local S3-compatible server (moto's server mode) and one store per backend."""
from __future__ import annotations

import contextlib

import pytest

from cbr_backup.chunkstore import FsChunkStore, MemoryChunkStore


@pytest.fixture(scope="session")
def s3_client(s3_server):
    # One client for all contract tests: making one loads botocore's models, which takes a good part of a
    # second. test_s3_store covers stores that make their own.
    with contextlib.closing(s3_server.client()) as client:
        yield client


@pytest.fixture(params=["memory", "fs", "s3"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryChunkStore()
    if request.param == "fs":
        return FsChunkStore(tmp_path / "store")
    return request.getfixturevalue("s3_server").store(client=request.getfixturevalue("s3_client"))
