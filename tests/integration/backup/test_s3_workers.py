"""A worker whose chunk store is an S3-compatible server (moto's, over HTTP), configured as users do it:
CBR_STORE_URL and the AWS credentials in the environment."""
from __future__ import annotations

import contextlib
import dataclasses
import uuid

import pytest

from cbr_backup.worker.main import chunk_store
from cbr_common.settings import SettingsError
from tests.support.s3 import backup_round_trip_through, worker_on_s3
from tests.support.services import settings_for


@pytest.fixture
async def s3_worker(services, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    prefix = f"cbr-{uuid.uuid4().hex[:8]}"
    async with worker_on_s3(services, s3_server.bucket, prefix, s3_server.endpoint_url):
        yield prefix


async def test_backup_and_restore_through_an_s3_store(caller, s3_server, s3_worker):
    with contextlib.closing(s3_server.client()) as client:
        await backup_round_trip_through(caller, client, s3_server.bucket, s3_worker, seed=41)


def test_a_store_url_that_is_not_s3_is_refused(infra):
    for bad in ("http://bucket/x", "s3:///no-bucket"):
        with pytest.raises(SettingsError):
            chunk_store(dataclasses.replace(settings_for(infra, "worker", {}), store_url=bad))
    with pytest.raises(SettingsError):
        chunk_store(dataclasses.replace(settings_for(infra, "worker", {}), store_dir=""))
