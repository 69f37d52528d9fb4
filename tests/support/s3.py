"""A real local S3-compatible server (moto's server mode) for the tests, started once per session on demand."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from tests.support.backups import backup_now, disk_in_vault, disk_path, new_disk_from, sha256_file, write_disk
from tests.support.calls import MIB

S3_REGION = "us-east-1"
S3_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def client(self):
        """A client configured like the one S3ChunkStore makes for itself."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=S3_REGION,
            config=Config(
                s3={"addressing_style": "path"}, retries={"mode": "standard"}, max_pool_connections=32
            ),
            **S3_CREDENTIALS,
        )

    def store(self, **kwargs):
        from cbr_backup.chunkstore import S3ChunkStore

        kwargs.setdefault("prefix", f"test-{uuid.uuid4().hex}/")  # each test sees only its own objects
        if "client" not in kwargs:
            kwargs.update(endpoint_url=self.endpoint_url, region_name=S3_REGION, **S3_CREDENTIALS)
        return S3ChunkStore(self.bucket, **kwargs)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto server exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(endpoint + "/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {endpoint} within {_START_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        server = S3Server(endpoint_url=endpoint, bucket="cbr-chunks")
        with contextlib.closing(server.client()) as client:
            client.create_bucket(Bucket=server.bucket)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.asynccontextmanager
async def worker_on_s3(services, bucket: str, prefix: str, endpoint_url: str):
    """The session's in-process workers swapped, for the block, for one whose chunk store is s3://bucket/prefix at
    endpoint_url, configured as users do it (CBR_STORE_URL; credentials from the environment)."""
    await services.stop_workers()
    try:
        await services.start_worker(store_dir="", store_url=(
            f"s3://{bucket}/{prefix}?endpoint={endpoint_url}&region={S3_REGION}"))
        yield
    finally:
        await services.stop_workers()
        await services.start_worker()


async def backup_round_trip_through(caller, client, bucket: str, prefix: str, seed: int) -> None:
    """A full and an incremental backup of a small disk through the worker's S3 store, both restored byte-exact
    to new disks, and their chunks in packs: one object per backup under prefix."""
    disk, vault = await disk_in_vault(caller, 4 * MIB, seed=seed)
    first_image = sha256_file(disk.path)
    first = await backup_now(caller, vault.vault_id)
    write_disk(disk.path, seed=seed + 1, chunks=2)
    second = await backup_now(caller, vault.vault_id)
    assert second.incremental
    for backup, image in ((first, first_image), (second, sha256_file(disk.path))):
        assert sha256_file(await disk_path(caller, await new_disk_from(caller, backup.backup_id))) == image
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{vault.vault_id}/packs/")
    assert listed["KeyCount"] == 2  # one pack per backup, as objects in the bucket
