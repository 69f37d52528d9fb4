"""MemoryChunkStore: a dict behind a lock, for unit tests."""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from cbr_backup.chunkstore.base import ChunkNotFoundError, check_key, check_prefix, check_value


class MemoryChunkStore:
    """Keeps everything in a dict; flush() has nothing to do."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> bool:
        check_key(key)
        check_value(data)
        value = bytes(data)  # a private copy: the caller may reuse its buffer
        with self._lock:
            if key in self._values:
                return False
            self._values[key] = value
            return True

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            try:
                return self._values[key]
            except KeyError:
                raise ChunkNotFoundError(key) from None

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        value = self.get(key)
        return [value[_start(len(value), offset):][:length] for offset, length in ranges]

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        wanted = {check_key(key) for key in keys}
        with self._lock:
            return {key for key in wanted if key in self._values}

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._values.pop(key, None)

    def iterate(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        # A snapshot of the matching keys, so callers may delete while they iterate.
        with self._lock:
            keys = [key for key in self._values if key.startswith(prefix)]
        return iter(keys)

    def put_durable(self, key: str, data: bytes) -> bool:
        return self.put(key, data)

    def flush(self) -> None:
        pass

    def remove_stale_temp_files(self, prefix: str = "", older_than_s: float = 0.0) -> int:
        check_prefix(prefix)
        return 0  # puts are atomic: nothing is ever left half-made


def _start(size: int, offset: int) -> int:
    return max(0, size + offset) if offset < 0 else offset
