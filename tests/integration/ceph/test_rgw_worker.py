"""A worker whose chunk store is radosgw of a real Ceph cluster, configured as users do it: CBR_STORE_URL and the
AWS credentials in the environment."""
from __future__ import annotations

import contextlib

import pytest

from tests.support.backups import backup_now, disk_in_vault, disk_path, new_disk_from, sha256_file, write_disk
from tests.support.calls import MIB


@pytest.fixture
async def rgw_worker(services, ceph, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph.cluster.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph.cluster.secret_key)
    bucket = ceph.new_bucket()
    await services.stop_workers()
    try:
        await services.start_worker(store_dir="", store_url=(
            f"s3://{bucket}/cbr?endpoint={ceph.endpoint_url}&region=us-east-1"))
        yield bucket
    finally:
        await services.stop_workers()
        await services.start_worker()


async def test_backup_and_restore_through_radosgw(caller, ceph, rgw_worker):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=51)
    first_image = sha256_file(disk.path)
    first = await backup_now(caller, vault.vault_id)
    write_disk(disk.path, seed=52, chunks=2)
    second = await backup_now(caller, vault.vault_id)
    assert second.incremental
    for backup, image in ((first, first_image), (second, sha256_file(disk.path))):
        assert sha256_file(await disk_path(caller, await new_disk_from(caller, backup.backup_id))) == image
    with contextlib.closing(ceph.s3_client()) as client:
        listed = client.list_objects_v2(Bucket=rgw_worker, Prefix=f"cbr/{vault.vault_id}/packs/")
    assert listed["KeyCount"] == 2  # one pack per backup, as objects in RGW
