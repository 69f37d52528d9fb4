"""A real single-node Ceph cluster (RBD pool + radosgw) for the tests: one per session, started only when a test
asks for the `ceph` fixture. Tests isolate themselves by image, namespace and bucket names (the helpers below
make unique ones), never by a cluster of their own.

Missing Ceph packages fail the tests that need them, loudly: CI runs as root and installs them (.ci/run)."""
from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field

import pytest

from cbr_devstack.ceph import PACKAGES, CephCluster, missing_tools

S3_REGION = "us-east-1"


@dataclass
class Ceph:
    cluster: CephCluster
    start_seconds: float
    _buckets: list[str] = field(default_factory=list)

    @property
    def conf_path(self) -> str:
        return str(self.cluster.conf_path)

    @property
    def pool(self) -> str:
        return self.cluster.pool

    @property
    def endpoint_url(self) -> str:
        return self.cluster.rgw_endpoint

    @property
    def credentials(self) -> dict[str, str]:
        return {"aws_access_key_id": self.cluster.access_key, "aws_secret_access_key": self.cluster.secret_key}

    def rados(self):
        """A connected librados handle as client.admin (the caller shuts it down)."""
        import rados

        handle = rados.Rados(conffile=self.conf_path)
        handle.connect(timeout=30)
        return handle

    @staticmethod
    def unique(prefix: str) -> str:
        """A name no other test uses: for images, namespaces and buckets (3-63 lowercase characters)."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def s3_client(self):
        """A boto3 client configured as S3ChunkStore configures its own for RGW."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=S3_REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}, max_pool_connections=32,
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
            **self.credentials)

    def new_bucket(self, client=None) -> str:
        name = self.unique("cbr")
        with contextlib.ExitStack() as stack:
            client = client or stack.enter_context(contextlib.closing(self.s3_client()))
            client.create_bucket(Bucket=name)
        return name

    def s3_store(self, bucket: str | None = None, **kwargs):
        """An S3ChunkStore on RGW, in a bucket of its own unless one is given."""
        from cbr_backup.chunkstore import S3ChunkStore

        bucket = bucket or self.new_bucket(kwargs.get("client"))
        if "client" not in kwargs:
            kwargs.update(endpoint_url=self.endpoint_url, region_name=S3_REGION, **self.credentials)
        return S3ChunkStore(bucket, **kwargs)


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.fail(f"Ceph is needed here but {' '.join(missing)} is missing: apt-get install {PACKAGES} "
                    "python3-rbd python3-rados, or `make ceph-packages` as root")
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"Debian's rados/rbd modules are not importable here ({exc}): run `make ceph-bindings`")
    # HTTPS too, as operators run it (boto3's checksums differ there); dies with the run: a killed run leaks none
    cluster = CephCluster(tmp_path_factory.mktemp("ceph"), rgw_tls=True, die_with_parent=True)
    began = time.monotonic()
    cluster.start()
    try:
        yield Ceph(cluster, time.monotonic() - began)
    finally:
        cluster.stop()
