"""S3ChunkStore: one object per key in an S3-compatible bucket, via boto3."""
from __future__ import annotations

import bisect
import io
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cbr_backup.chunkstore.base import (ChunkNotFoundError, check_key, check_prefix, check_value, is_valid_key,
                                        store_full)

_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
# The server has no room for the object: a bucket or user quota (Ceph RGW), a full drive set (MinIO), HTTP 507.
# Not EntityTooLarge: that is one object over the size limit (5 GiB), which a chunk never is.
_FULL_CODES = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "StorageFull"}
_FULL_STATUS = 507
_NOT_IMPLEMENTED_CODES = {"NotImplemented", "501"}
# exists_many lists a folder instead of HEADing keys one by one only where that pays: the folder is asked
# for at least this many keys, and each 1,000-entry page settles at least this many of them.
_LIST_MIN_KEYS = 32
_LIST_PAGE_MIN_SETTLED = 16
_CONFLICT_RETRIES = 5


def _error(exc: ClientError) -> tuple[str, int]:
    """The error code and HTTP status of a failed call."""
    response = exc.response
    code = str(response.get("Error", {}).get("Code", ""))
    return code, int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class _KeyLocks:
    """One lock per key while someone holds it, so puts of one key from this process run one at a time."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def hold(self, key: str) -> _HeldKey:
        return _HeldKey(self, key)

    def _acquire(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks.get(key) or (threading.Lock(), 0)
            self._locks[key] = (lock, users + 1)
        lock.acquire()

    def _release(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
        lock.release()


class _HeldKey:
    def __init__(self, locks: _KeyLocks, key: str):
        self._locks, self._key = locks, key

    def __enter__(self) -> None:
        self._locks._acquire(self._key)

    def __exit__(self, *exc_info: object) -> None:
        self._locks._release(self._key)


class S3ChunkStore:
    """Objects named `<prefix><key>` in one bucket.

    put is create-only: `PutObject` with `If-None-Match: *`, so the first writer wins on the server and a later
    put gets 412 and returns False. Servers that ignore or reject that header are found by a one-time probe
    (or told with conditional_writes=False); then put does HEAD before PUT, which is first-writer-wins only
    within this process (puts of one key from one store object are serialised either way). flush() is a no-op:
    an object is durable once its PUT returned 200.

    Tested against moto and Ceph radosgw 16 (pacific). RGW differs from AWS in ways this store steers around:
    it does not take boto3's default aws-chunked uploads with trailing checksums over HTTPS (MissingContentLength),
    so checksums are sent and checked only when an operation requires them; it ignores If-None-Match on
    CompleteMultipartUpload, answers that call with an empty ETag, and refuses If-Match with a quoted ETag, so
    the store writes every object with one conditional PutObject (no multipart, no If-Match).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        max_pool_connections: int = 32,
        head_concurrency: int = 16,
        conditional_writes: bool | None = None,
    ):
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self._head_concurrency = max(1, head_concurrency)
        self._owns_client = client is None
        if client is None:
            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=max_pool_connections,
                connect_timeout=10,
                read_timeout=60,
                # Local S3-compatible servers rarely have DNS names per bucket.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                # boto3 >= 1.36 would add CRC32 trailers to every upload, which radosgw 16 rejects over HTTPS.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            # A session of our own: boto3's default session is not safe to share between threads.
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region_name,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                config=config,
            )
        self.client = client
        self._conditional = conditional_writes
        self._probe_lock = threading.Lock()
        self._key_locks = _KeyLocks()

    @property
    def conditional_writes(self) -> bool | None:
        """Whether put relies on If-None-Match (None until the first put has probed the server)."""
        return self._conditional

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _name(self, key: str) -> str:
        return self.prefix + key

    # put -------------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        check_value(data)
        name = self._name(key)
        try:
            with self._key_locks.hold(name):
                if self._conditional_writes_work():
                    return self._put_if_absent(name, data)
                if self._head(name):
                    return False
                self.client.put_object(Bucket=self.bucket, Key=name, Body=_body(data))
                return True
        except ClientError as exc:
            code, status = _error(exc)
            if code in _FULL_CODES or status == _FULL_STATUS:
                raise store_full(f"the S3 server answered {code or status}") from exc
            raise

    def _put_if_absent(self, name: str, data: bytes) -> bool:
        body = _body(data)
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=body, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code, status = _error(exc)
                if status == 412 or code == "PreconditionFailed":
                    return False
                # 409: another conditional write of this name is in flight; retry and learn who won.
                if (status == 409 or code == "ConditionalRequestConflict") and attempt < _CONFLICT_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise
        raise AssertionError("unreachable")

    def _conditional_writes_work(self) -> bool:
        if self._conditional is None:
            with self._probe_lock:
                if self._conditional is None:
                    self._conditional = self._probe_conditional_writes()
        return self._conditional

    def _probe_conditional_writes(self) -> bool:
        """Writes one object twice with If-None-Match: * and sees whether the second is refused."""
        name = f"{self.prefix}.cbr-probe-{uuid.uuid4().hex}"  # "." keeps it out of iterate()
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=b"", IfNoneMatch="*")
            try:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=b"", IfNoneMatch="*")
                return False  # the header was ignored
            except ClientError as exc:
                code, status = _error(exc)
                if status == 412 or code == "PreconditionFailed":
                    return True
                if status in (400, 501) or code in _NOT_IMPLEMENTED_CODES:
                    return False
                raise
        except ClientError as exc:
            code, status = _error(exc)
            if status in (400, 501) or code in _NOT_IMPLEMENTED_CODES:
                return False  # the header was rejected outright
            raise
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=name)
            except ClientError:
                pass  # e.g. no delete permission: a stray empty object is harmless

    # reads -----------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _error(exc)[0] in _NOT_FOUND_CODES:
                raise ChunkNotFoundError(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """One ranged GET per range (the caller merges adjacent chunks into one range)."""
        check_key(key)
        name = self._name(key)
        out = []
        for offset, length in ranges:
            if length <= 0:
                out.append(b"")
                continue
            span = f"bytes=-{-offset}" if offset < 0 else f"bytes={offset}-{offset + length - 1}"
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name, Range=span)
            except ClientError as exc:
                code, status = _error(exc)
                if code in _NOT_FOUND_CODES:
                    raise ChunkNotFoundError(key) from None
                if status == 416 or code == "InvalidRange":  # the range starts past the end
                    out.append(b"")
                    continue
                raise
            with response["Body"] as body:
                out.append(body.read()[:length])
        return out

    def _head(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
            return True
        except ClientError as exc:
            code, status = _error(exc)
            if status == 404 or code in _NOT_FOUND_CODES:
                return False
            raise

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        """Lists the folder of keys asked for in bulk where the listing is dense enough to beat HEADs (a new
        or small vault, or a big batch), and HEADs the rest on a bounded thread pool."""
        wanted = {check_key(key) for key in keys}
        found: set[str] = set()
        to_head: list[str] = []
        groups: dict[str, list[str]] = defaultdict(list)
        for key in wanted:
            groups[key.rpartition("/")[0]].append(key)
        for folder, group in groups.items():
            if len(group) < _LIST_MIN_KEYS:
                to_head.extend(group)
            else:
                group.sort()
                unsettled = self._list_settle(folder, group, found)
                to_head.extend(unsettled)
        if to_head:
            with ThreadPoolExecutor(min(self._head_concurrency, len(to_head))) as pool:
                for key, exists in zip(to_head, pool.map(lambda k: self._head(self._name(k)), to_head)):
                    if exists:
                        found.add(key)
        return found

    def _list_settle(self, folder: str, keys: list[str], found: set[str]) -> list[str]:
        """Lists the folder in key order, jumping to the next key still unsettled, adding the keys seen to
        found; stops at the first page that settles too few keys and returns the keys not yet settled."""
        list_prefix = self._name(folder + "/" if folder else "")
        cut = len(self.prefix)
        index = 0
        while index < len(keys):
            next_key = keys[index]
            response = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=list_prefix, StartAfter=self._name(next_key)[:-1], MaxKeys=1000
            )
            names = [item["Key"][cut:] for item in response.get("Contents", ())]
            if response.get("IsTruncated") and names:
                settled_to = bisect.bisect_right(keys, names[-1], lo=index)
            else:
                settled_to = len(keys)  # the listing reached the end of the folder
            page = set(names)
            found.update(key for key in keys[index:settled_to] if key in page)
            settled = settled_to - index
            index = settled_to
            if settled < _LIST_PAGE_MIN_SETTLED:
                break  # the keys are sparse among the folder's objects: HEADs are cheaper from here
        return keys[index:]

    # delete, iterate, flush ------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        check_key(key)
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))  # 204 whether or not it existed

    def iterate(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)  # here, not in the generator, so a bad prefix fails at the call
        return self._iterate(prefix)

    def _iterate(self, prefix: str) -> Iterator[str]:
        cut = len(self.prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._name(prefix)):
            for item in page.get("Contents", ()):
                key = item["Key"][cut:]
                if is_valid_key(key):  # skips probe objects and anything else that is not ours
                    yield key

    def put_durable(self, key: str, data: bytes) -> bool:
        return self.put(key, data)  # a PUT that returned is durable

    def flush(self) -> None:
        pass

    def remove_stale_temp_files(self, prefix: str = "", older_than_s: float = 0.0) -> int:
        check_prefix(prefix)
        return 0  # a PUT is atomic on the server: a cut-off one leaves nothing


def _body(data):
    """What botocore sends: bytes or a bytearray as they are, a memoryview (a pack's mapping) read in slices;
    copying a 32 MiB pack whole for its put cost 32 MiB per pack in flight."""
    return _ViewReader(data) if isinstance(data, memoryview) else data


class _ViewReader:
    """A memoryview as the seekable file botocore reads a body from (sized, hashed and sent in slices)."""

    def __init__(self, view: memoryview):
        self._view = view.cast("B")
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = bytes(self._view[self._pos:end])
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)
