"""A worker whose chunk store is an S3-compatible server (moto's, over HTTP), configured as users do it:
CBR_STORE_URL and the AWS credentials in the environment."""
from __future__ import annotations

import contextlib
import dataclasses
import uuid

import pytest

from cbr_backup.worker.main import chunk_store
from cbr_common.settings import SettingsError
from tests.support.backups import backup_now, disk_in_vault, disk_path, new_disk_from, sha256_file, write_disk
from tests.support.calls import MIB
from tests.support.services import settings_for


@pytest.fixture
async def s3_worker(services, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    prefix = f"cbr-{uuid.uuid4().hex[:8]}"
    await services.stop_workers()
    try:
        await services.start_worker(store_dir="", store_url=(
            f"s3://{s3_server.bucket}/{prefix}?endpoint={s3_server.endpoint_url}&region=us-east-1"))
        yield prefix
    finally:
        await services.stop_workers()
        await services.start_worker()


async def test_backup_and_restore_through_an_s3_store(caller, s3_server, s3_worker):
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=41)
    first_image = sha256_file(disk.path)
    first = await backup_now(caller, vault.vault_id)
    write_disk(disk.path, seed=42, chunks=2)
    second = await backup_now(caller, vault.vault_id)
    assert second.incremental
    for backup, image in ((first, first_image), (second, sha256_file(disk.path))):
        assert sha256_file(await disk_path(caller, await new_disk_from(caller, backup.backup_id))) == image
    with contextlib.closing(s3_server.client()) as client:
        listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{s3_worker}/{vault.vault_id}/packs/")
    assert listed["KeyCount"] == 2  # the chunks are in packs, objects in the bucket: one per backup


def test_a_store_url_that_is_not_s3_is_refused(infra):
    for bad in ("http://bucket/x", "s3:///no-bucket"):
        with pytest.raises(SettingsError):
            chunk_store(dataclasses.replace(settings_for(infra, "worker", {}), store_url=bad))
    with pytest.raises(SettingsError):
        chunk_store(dataclasses.replace(settings_for(infra, "worker", {}), store_dir=""))
