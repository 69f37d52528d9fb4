"""The standard benchmark workload: a seeded sparse raw disk and its change step.

Layout, in 1 MiB extents drawn from a seeded RNG: ~35% never written (real holes: the file is sized with
truncate and those extents are skipped, never written with zeros), ~35% text-like (lines of words from a seeded
vocabulary: compressible, but no two extents alike), ~30% random bytes. The change step rewrites a seeded choice
of 1% of the 64 KiB blocks with random bytes, in place (a block that falls in a hole becomes allocated, as it
would on a real disk).

Everything is a pure function of the seed: the same seed gives the same bytes, on any machine.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIB = 1 << 20
EXTENT = MIB
CHANGE_BLOCK = 64 * 1024
HOLE_SHARE = 0.35
TEXT_SHARE = 0.35  # the rest (~30%) is random bytes

_LETTERS = b"etaoinshrdlucmfwypvbgkjqxz"
_LETTER_WEIGHTS = (12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1)
_POOL_LINES = 1 << 15


@dataclass
class DiskLayout:
    """What generate() wrote; extents lists hold extent indexes."""
    size_bytes: int
    seed: int
    extent_bytes: int = EXTENT
    holes: list[int] = field(default_factory=list)
    text: list[int] = field(default_factory=list)
    random: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        n = max(1, len(self.holes) + len(self.text) + len(self.random))
        return {
            "size_bytes": self.size_bytes,
            "seed": self.seed,
            "extent_bytes": self.extent_bytes,
            "extents": {"hole": len(self.holes), "text": len(self.text), "random": len(self.random)},
            "shares": {"hole": round(len(self.holes) / n, 4), "text": round(len(self.text) / n, 4),
                       "random": round(len(self.random) / n, 4)},
        }

    def to_dict(self) -> dict:
        return asdict(self)


class TextSource:
    """Text-like bytes from a seeded pool of lines ("%08d word word ...\\n"); each call draws a fresh line order."""

    def __init__(self, seed: int):
        rng = random.Random(f"cbr-bench-text-{seed}")
        vocabulary = []
        for _ in range(2048):
            length = rng.randint(2, 11)
            vocabulary.append(bytes(rng.choices(_LETTERS, weights=_LETTER_WEIGHTS, k=length)))
        lines = []
        for _ in range(_POOL_LINES):
            words = rng.choices(vocabulary, k=rng.randint(4, 14))
            lines.append(b"%08d " % rng.randrange(10 ** 8) + b" ".join(words) + b"\n")
        self._lines = lines
        self._average = sum(map(len, lines)) / len(lines)

    def block(self, rng: random.Random, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            k = int((size - len(out)) / self._average) + 16
            out += b"".join(rng.choices(self._lines, k=k))
        del out[size:]
        return bytes(out)


def generate(path: str | os.PathLike, size_bytes: int, seed: int = 1, *, sync: bool = True) -> DiskLayout:
    """Writes the disk image at path (replacing it) and returns its layout; sync: fsync before returning."""
    path = Path(path)
    rng = random.Random(seed)
    text = TextSource(seed)
    layout = DiskLayout(size_bytes=size_bytes, seed=seed)
    extents = (size_bytes + EXTENT - 1) // EXTENT
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size_bytes)
        for i in range(extents):
            length = min(EXTENT, size_bytes - i * EXTENT)
            r = rng.random()
            if r < HOLE_SHARE:
                layout.holes.append(i)
                continue
            if r < HOLE_SHARE + TEXT_SHARE:
                layout.text.append(i)
                data = text.block(rng, length)
            else:
                layout.random.append(i)
                data = rng.randbytes(length)
            _pwrite_all(fd, data, i * EXTENT)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return layout


def change_writes(size_bytes: int, percent: float = 1.0, seed: int = 7) -> Iterator[tuple[int, bytes]]:
    """The change step as (offset, 64 KiB of random bytes), in offset order: percent% of the whole 64 KiB blocks
    of a disk of size_bytes. A pure function of its arguments, so a file and an RBD image get the same bytes."""
    rng = random.Random(f"cbr-bench-change-{seed}")
    blocks = size_bytes // CHANGE_BLOCK
    count = round(blocks * percent / 100)
    for b in sorted(rng.sample(range(blocks), count)):
        yield b * CHANGE_BLOCK, rng.randbytes(CHANGE_BLOCK)


def mutate(path: str | os.PathLike, percent: float = 1.0, seed: int = 7, *, sync: bool = True) -> list[int]:
    """Rewrites percent% of the whole 64 KiB blocks with random bytes, in place; returns the block indexes."""
    chosen = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in change_writes(os.fstat(fd).st_size, percent, seed):
            _pwrite_all(fd, data, offset)
            chosen.append(offset // CHANGE_BLOCK)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return chosen


def data_extents(path: str | os.PathLike) -> Iterator[tuple[int, int]]:
    """(start, end) of the file's allocated extents, by SEEK_DATA / SEEK_HOLE: what a sparse copy copies."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, offset
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike, buffer_bytes: int = 8 * MIB) -> str:
    digest = hashlib.sha256()
    buf = bytearray(buffer_bytes)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def allocated_bytes(path: str | os.PathLike) -> int:
    """Bytes in allocated extents (SEEK_DATA / SEEK_HOLE), i.e. what a hole-aware reader reads."""
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            total += end - start
            offset = end
    finally:
        os.close(fd)
    return total


def sparse_copy(source: str | os.PathLike, target: str | os.PathLike, *, sync: bool = True) -> None:
    """Copies a file keeping its holes: only allocated extents are copied (copy_file_range), holes stay holes."""
    src = os.open(source, os.O_RDONLY)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(src, start, os.SEEK_HOLE)
                _copy_range(src, dst, start, end)
                offset = end
            if sync:
                os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes [start, end) from src to dst at the same offsets: copy_file_range, or read and write where the
    kernel will not copy between these two file systems (EXDEV, e.g. ext4 to an XFS loop mount)."""
    position = start
    while position < end:
        try:
            n = os.copy_file_range(src, dst, end - position, position, position)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            break
        if n <= 0:
            raise OSError(f"copy_file_range stopped at {position} of {end}")
        position += n
    while position < end:
        data = os.pread(src, min(8 * MIB, end - position), position)
        if not data:
            raise OSError(f"read stopped at {position} of {end}")
        _pwrite_all(dst, data, position)
        position += len(data)


def chunker_buffer(size_bytes: int, seed: int = 3) -> bytearray:
    """An in-memory mix for the chunker race: 1 MiB extents, half text-like, half random, seeded."""
    rng = random.Random(f"cbr-bench-chunker-{seed}")
    text = TextSource(seed)
    out = bytearray()
    while len(out) < size_bytes:
        n = min(EXTENT, size_bytes - len(out))
        out += text.block(rng, n) if rng.random() < 0.5 else rng.randbytes(n)
    return out


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
