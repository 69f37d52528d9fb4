"""The mount's read path without FUSE: windows assembled from read streams (holes as zeros), cached, fetched once
however many threads ask, and a failed fetch not cached."""
import threading
from dataclasses import dataclass

import pytest

from cbr_cli.backup_mount import WINDOW, WindowCache, assemble, read_through


@dataclass
class Msg:
    offset: int = 0
    data: bytes = b""
    hole_bytes: int = 0
    size: int = 0


def stream_of(content: bytes, offset: int, length: int):
    """What the service sends for the range: data pieces, with runs of zeros as holes."""
    at, end = offset, offset + length
    while at < end:
        piece = content[at:min(end, at + 4096)]
        if piece.strip(b"\0"):
            yield Msg(at, piece, 0, len(content))
        else:
            yield Msg(at, b"", len(piece), len(content))
        at += len(piece)


def test_windows_give_any_range_exactly_and_each_is_fetched_once():
    content = bytes(WINDOW // 2) + bytes(range(256)) * (WINDOW * 2 // 256) + b"tail"
    fetched = []

    def fetch(at, length):
        fetched.append(at)
        return assemble(stream_of(content, at, length), at, length)[0]

    cache = WindowCache(windows=8)
    for offset, length in ((0, 10), (WINDOW - 3, 7), (0, len(content)), (len(content) - 2, 100), (len(content), 5)):
        assert read_through(cache, "f", len(content), offset, length, fetch) == content[offset:offset + length]
    assert sorted(fetched) == [0, WINDOW, 2 * WINDOW]
    assert assemble(stream_of(content, 0, 10), 0, 10) == (content[:10], len(content))


def test_racing_threads_share_one_fetch_and_a_failure_is_not_cached():
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow(at, length):
        calls.append(at)
        started.set()
        release.wait(5)
        return b"x" * length

    cache = WindowCache(windows=2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        read_through(cache, "f", WINDOW, 0, 4, slow))) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(5)
    release.set()
    for t in threads:
        t.join(5)
    assert results == [b"xxxx"] * 4 and calls == [0]

    def failing(at, length):
        raise OSError("down")

    with pytest.raises(OSError):
        read_through(cache, "g", WINDOW, 0, 4, failing)
    assert read_through(cache, "g", WINDOW, 0, 4, lambda at, length: b"y" * length) == b"yyyy"
