"""CBR's data path once against an S3 store: requests by type per GiB stored, and restore reads vs needs.

The endpoint is the radosgw of the rbd row's private Ceph cluster while it is up (bench.run), else a moto server
the bench starts on 127.0.0.1, unless --s3-endpoint names another (credentials from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, the bucket from --s3-bucket, created if missing). The backup and the restore run in the
harness's process with an S3ChunkStore whose client counts every request it sends (botocore's before-send
event: one count per HTTP request, retries included), by type: PUT, GET (object reads, ranged or not), LIST,
HEAD, DELETE. The chunk index is a private Postgres, as for the CLI.
Timings here are not reported: moto is not a storage server, and the data path is not the service path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bench.measure import MB

GIB = 1 << 30
TYPES = ("PUT", "GET", "LIST", "HEAD", "DELETE", "POST")
DEFAULT_BUCKET = "cbr-bench"
REGION = "us-east-1"


def classify(method: str, url: str) -> str:
    """The type of one S3 request (path-style or virtual-host URL): a GET without a key, or with list-type, is a
    LIST; other methods are their own name."""
    method = method.upper()
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    if method == "GET":
        path = parts.path.strip("/")
        host_bucket = parts.hostname is not None and parts.hostname.count(".") >= 3 \
            and not parts.hostname.replace(".", "").isdigit()  # bucket.s3.region.amazonaws.com
        has_key = bool(path) if host_bucket else "/" in path
        if "list-type" in query or "prefix" in query or not has_key:
            return "LIST"
        return "GET"
    return method if method in TYPES else "OTHER"


class RequestCounter:
    """Counts the requests one botocore client sends, by type; phase() starts a new tally."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter = Counter()

    def attach(self, client) -> None:
        client.meta.events.register("before-send.s3", self._before_send)

    def _before_send(self, request, **_) -> None:
        kind = classify(request.method, request.url)
        with self._lock:
            self.counts[kind] += 1
        return None  # let botocore send it

    def take(self) -> dict:
        with self._lock:
            counts, self.counts = dict(self.counts), Counter()
        return counts


def per_gib(counts: dict, stored_bytes: int) -> dict:
    if not stored_bytes:
        return {kind: None for kind in counts}
    return {kind: round(n / (stored_bytes / GIB), 1) for kind, n in sorted(counts.items())}


@contextlib.contextmanager
def moto_server(log_dir: Path, timeout: float = 30):
    """A moto S3 server on a free 127.0.0.1 port; yields its endpoint URL; stopped (by its pid) after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "moto.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}")
            try:
                with urllib.request.urlopen(endpoint + "/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {endpoint} in {timeout:.0f} s")
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def measure(pristine: Path, work: Path, change, *, endpoint: str | None = None,
            bucket: str = DEFAULT_BUCKET, access_key: str | None = None, secret_key: str | None = None,
            server: str = "configured endpoint") -> dict:
    """Full backup, the change step, incremental, restore to a new file; counts and object figures. Keys not
    given come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    work.mkdir(parents=True, exist_ok=True)
    credentials = {"aws_access_key_id": access_key or os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                   "aws_secret_access_key": secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "test")}
    try:
        if endpoint:
            return _measure(pristine, work, change, endpoint, bucket, server, credentials)
        with moto_server(work) as moto:
            return _measure(pristine, work, change, moto, bucket, "moto server (in-memory S3)", credentials)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}


def _measure(pristine: Path, work: Path, change, endpoint: str, bucket: str, server: str, credentials: dict) -> dict:
    from cbr_backup.adapters.chunk_index import ChunkIndex
    from cbr_backup.chunkstore import S3ChunkStore
    from cbr_backup.datapath.chunk_codec import VaultKeys
    from cbr_backup.datapath.disk_backup import backup_disk, load_manifest
    from cbr_backup.datapath.disk_restore import restore_to_new_disk
    from cbr_common.migrations import upgrade
    from cbr_devstack.postgres import PostgresCluster

    vault_id = str(uuid.uuid4())
    prefix = f"bench-{vault_id}/"
    store = S3ChunkStore(bucket, prefix, endpoint_url=endpoint, region_name=REGION, **credentials)
    with contextlib.suppress(Exception):
        store.client.create_bucket(Bucket=bucket)
    counter = RequestCounter()
    counter.attach(store.client)
    keys = VaultKeys(os.urandom(32), os.urandom(32))
    disk = work / "disk.raw"
    cluster = PostgresCluster(work / "pg", fast=False)
    cluster.start()
    index = None
    try:
        upgrade(cluster.url, "cbr_backup")
        index = ChunkIndex(cluster.url)
        from bench.workload import sparse_copy, sha256_file
        sparse_copy(pristine, disk)
        now = dt.datetime.now(dt.timezone.utc)
        counter.take()  # the bucket's creation is not the backup's
        full = backup_disk(disk, keys, store, index, vault_id, manifest_id=str(uuid.uuid4()), started_time=now)
        full_counts = counter.take()
        objects, stored = _listing(store.client, bucket, prefix)
        change(disk)
        changed_sha = sha256_file(disk)
        parent = load_manifest(store, keys, vault_id, full.manifest_id)
        counter.take()
        incr = backup_disk(disk, keys, store, index, vault_id, parent=parent, manifest_id=str(uuid.uuid4()),
                           started_time=dt.datetime.now(dt.timezone.utc))
        incr_counts = counter.take()
        objects_after_incr, stored_after_incr = _listing(store.client, bucket, prefix)
        manifest = load_manifest(store, keys, vault_id, incr.manifest_id)
        counter.take()
        target = work / "restored.raw"
        restored = restore_to_new_disk(manifest, store, keys, vault_id, target, index=index)
        restore_counts = counter.take()
        restore_ok = sha256_file(target) == changed_sha
        target.unlink(missing_ok=True)
        summary = restored.summary()
    finally:
        if index is not None:
            index.close()
        cluster.stop()
        disk.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            _empty(store.client, bucket, prefix)
        store.close()
    read, needed = summary.get("store_read_bytes"), summary.get("needed_bytes")
    return {
        "server": server, "endpoint": endpoint,
        "full_stored_bytes": stored, "full_objects": objects,
        "objects_per_gib": round(objects / (stored / GIB), 1) if stored else None,
        "incr_added_bytes": stored_after_incr - stored, "incr_objects": objects_after_incr - objects,
        "requests": {"full": full_counts, "incr": incr_counts, "restore": restore_counts},
        "requests_per_gib": {"full": per_gib(full_counts, stored), "incr": per_gib(incr_counts, stored),
                             "restore": per_gib(restore_counts, stored)},
        "restore_read_bytes": read, "restore_needed_bytes": needed,
        "restore_read_ratio": round(read / needed, 4) if read and needed else None,
        "restore_ok": restore_ok,
        "restore_read_mb": round(read / MB, 1) if read else None,
    }


def _listing(client, bucket: str, prefix: str) -> tuple[int, int]:
    """Objects and their bytes under prefix (the caller drops these requests from the counts: take())."""
    count = size = 0
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
        if not page.get("IsTruncated"):
            return count, size
        token = page["NextContinuationToken"]


def _empty(client, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
