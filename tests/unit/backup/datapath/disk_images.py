"""Small seeded disk images for the data path's tests: holes, text-like and random extents."""
from __future__ import annotations

import hashlib
import os
import random

KIB = 1024
MIB = 1 << 20


def make_disk(path, size: int, seed: int = 1, extent: int = 256 * KIB, holes: float = 0.35,
              text: float = 0.35) -> str:
    """A sparse disk of size bytes: extents left as holes, filled with text-like lines, or random."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, extent):
            length = min(extent, size - offset)
            r = rng.random()
            if r < holes:
                continue
            f.seek(offset)
            f.write(text_bytes(rng, length) if r < holes + text else rng.randbytes(length))
    return str(path)


def text_bytes(rng: random.Random, n: int) -> bytes:
    words = [b"disk", b"vault", b"chunk", b"block", b"restore", b"backup", b"server", b"ok", b"error"]
    out = bytearray()
    while len(out) < n:
        out += b"%08d " % rng.randrange(10 ** 8) + b" ".join(rng.choices(words, k=rng.randint(3, 9))) + b"\n"
    return bytes(out[:n])


def rewrite_blocks(path, block_size: int, count: int, seed: int = 7) -> list[int]:
    """Rewrites count whole blocks with random bytes (some may land in holes); returns their indexes."""
    rng = random.Random(seed)
    blocks = os.path.getsize(path) // block_size
    chosen = sorted(rng.sample(range(blocks), count))
    with open(path, "r+b") as f:
        for b in chosen:
            f.seek(b * block_size)
            f.write(rng.randbytes(block_size))
    return chosen


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def allocated_bytes(path) -> int:
    return os.stat(path).st_blocks * 512
