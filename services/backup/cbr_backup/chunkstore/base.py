"""The chunk store interface, its error, and the key rules every backend enforces."""
from __future__ import annotations

import errno
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from cbr_backup.domain.errors import StoreFullError

MAX_KEY_LENGTH = 512
MAX_KEY_SEGMENTS = 4
# A segment becomes a file name in FsChunkStore; with its temp suffix it must stay under NAME_MAX (255).
MAX_SEGMENT_LENGTH = 200

# A put that cannot be stored for want of room: permanent until space is freed, so never retried as transient.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How old a temp file of a put must be before it counts as a crash's leftover: far beyond any put still running.
STALE_TEMP_AGE_S = 3600.0

# One to four segments of [A-Za-z0-9_-]; no dots at all, so "..", temp-file suffixes and hidden names cannot
# be keys, and a key maps to a path or an object name without escaping.
_SEGMENT = r"[A-Za-z0-9_-]{1,%d}" % MAX_SEGMENT_LENGTH
_KEY_RE = re.compile(r"%s(?:/%s){0,%d}" % (_SEGMENT, _SEGMENT, MAX_KEY_SEGMENTS - 1))
# A prefix is a key cut anywhere: whole segments each followed by "/", then an optional partial segment.
_PREFIX_RE = re.compile(r"(?:%s/){0,%d}[A-Za-z0-9_-]{0,%d}" % (_SEGMENT, MAX_KEY_SEGMENTS - 1, MAX_SEGMENT_LENGTH))


class ChunkNotFoundError(LookupError):
    """No value is stored under the key. Whether that means data loss is for the caller to decide."""

    def __init__(self, key: str):
        super().__init__(f"no chunk store entry for key {key!r}")
        self.key = key


@runtime_checkable
class ChunkStore(Protocol):
    """Opaque values under keys like `<vault-id>/chunks/<hex>`, written once.

    Synchronous and thread-safe: callers run it on a thread pool. Every method raises ValueError for a key or
    prefix that breaks the key rules (`check_key`) before touching the backend. put and flush raise
    StoreFullError (RESOURCE_EXHAUSTED, never worth a retry) when the backend has no room left.
    """

    def put(self, key: str, data: bytes) -> bool:
        """Stores data unless the key exists. True if this call wrote it; False if it existed (first writer
        wins: the stored value is never replaced). Concurrent puts of one key: exactly one returns True."""

    def put_durable(self, key: str, data: bytes) -> bool:
        """put, durable when it returns (as if flush() followed), for writers that make one value durable at a
        time: the replica receiver's packs. The file system makes only this value durable (fsync of the file
        and its folder), not every file of the file system as flush's syncfs does."""

    def get(self, key: str) -> bytes:
        """The whole value; raises ChunkNotFoundError when the key is absent."""

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes at each (offset, length) of the value, in order (a pack's chunks: pread, S3 ranged GETs).
        A negative offset counts from the value's end (-16: its last 16 bytes). A range past the end comes
        back short. Raises ChunkNotFoundError when the key is absent."""

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        """The subset of keys that exist, found in batches rather than one round trip per key."""

    def delete(self, key: str) -> None:
        """Removes the key; no error when it is absent."""

    def iterate(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with prefix (a string prefix, e.g. "vault/chunks/ab"), in no set order, streamed
        with bounded memory. Keys put or deleted during the walk may or may not appear."""

    def flush(self) -> None:
        """Durability barrier: every put that returned before this call survives a crash after it returns."""

    def remove_stale_temp_files(self, prefix: str = "", older_than_s: float = STALE_TEMP_AGE_S) -> int:
        """Deletes what puts cut off by a crash left behind under prefix (nothing for stores whose puts are
        atomic on the server), only if older than older_than_s, so a put still running is never touched.
        Returns how many were deleted."""


def store_full(reason: str) -> StoreFullError:
    return StoreFullError(f"the chunk store is full ({reason}): free space or grow the store, then try again")


def check_key(key: str) -> str:
    """Returns key if it is valid; raises ValueError otherwise (TypeError if it is not a str)."""
    if not isinstance(key, str):
        raise TypeError(f"chunk store key must be str, not {type(key).__name__}")
    if len(key) > MAX_KEY_LENGTH or _KEY_RE.fullmatch(key) is None:
        raise ValueError(
            f"invalid chunk store key {key[:80]!r}: want 1-{MAX_KEY_SEGMENTS} segments of 1-{MAX_SEGMENT_LENGTH} "
            f"characters [A-Za-z0-9_-] separated by '/', at most {MAX_KEY_LENGTH} characters in all"
        )
    return key


def check_prefix(prefix: str) -> str:
    """Returns prefix if some valid key could start with it ("" included); raises ValueError otherwise."""
    if not isinstance(prefix, str):
        raise TypeError(f"chunk store prefix must be str, not {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_LENGTH or _PREFIX_RE.fullmatch(prefix) is None:
        raise ValueError(f"invalid chunk store prefix {prefix[:80]!r}")
    return prefix


def is_valid_key(key: str) -> bool:
    return len(key) <= MAX_KEY_LENGTH and _KEY_RE.fullmatch(key) is not None


def check_value(data: bytes) -> None:
    # bytes(5) would silently store five zero bytes, so insist on a real buffer.
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"chunk store value must be bytes, not {type(data).__name__}")
