"""A worker whose chunk store is radosgw of a real Ceph cluster, configured as users do it: CBR_STORE_URL and the
AWS credentials in the environment."""
from __future__ import annotations

import contextlib

import pytest

from tests.support.s3 import backup_round_trip_through, worker_on_s3


@pytest.fixture
async def rgw_worker(services, ceph, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph.cluster.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph.cluster.secret_key)
    bucket = ceph.new_bucket()
    async with worker_on_s3(services, bucket, "cbr", ceph.endpoint_url):
        yield bucket


async def test_backup_and_restore_through_radosgw(caller, ceph, rgw_worker):
    with contextlib.closing(ceph.s3_client()) as client:
        await backup_round_trip_through(caller, client, rgw_worker, "cbr", seed=51)
