"""The service path's disk on RBD (the embedded stack with CBR_PROVIDER=ceph): the workload written into the
disk's image, the change step applied to it, its checksum, and what diff_iterate reports changed.

The stack's private cluster is reached through its ceph.conf (client.admin's keyring is named there). A disk's
locator is `rbd:POOL/NAMESPACE/IMAGE`. The image is new and so unallocated: only the workload's data extents are
written, its holes stay holes, as on the file pools (sparse_copy).
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from bench.workload import change_writes, data_extents

PIECE = 4 << 20  # one RBD object with the default layout
DIFF_BLOCK = 128 << 10  # the block before 1 MiB blocks; reads are page-granular now, so this bound is the stricter


def parse_locator(locator: str) -> tuple[str, str, str]:
    """(pool, namespace, image) of `rbd:POOL/NAMESPACE/IMAGE` (the namespace may be empty: `rbd:POOL//IMAGE`)."""
    if not locator.startswith("rbd:"):
        raise ValueError(f"not an RBD disk: {locator!r}")
    parts = locator[4:].split("/")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise ValueError(f"an RBD locator is rbd:POOL/NAMESPACE/IMAGE, not {locator!r}")
    return parts[0], parts[1], parts[2]


def blocks_bytes(extents: Iterable[tuple[int, int]], block: int = DIFF_BLOCK) -> int:
    """The bytes of the distinct blocks the (offset, length) extents touch: what a backup reading whole blocks
    reads at most for them."""
    blocks: set[int] = set()
    for offset, length in extents:
        if length > 0:
            blocks.update(range(offset // block, -(-(offset + length) // block)))
    return len(blocks) * block


def pieces(start: int, end: int, size: int = PIECE) -> Iterator[tuple[int, int]]:
    """(offset, length) of [start, end) in pieces of at most `size` bytes."""
    for offset in range(start, end, size):
        yield offset, min(size, end - offset)


class RbdDisk:
    """One image of the stack's cluster, opened by a client of the bench's own (as a VM's would be)."""

    def __init__(self, conf_path: Path, locator: str):
        import rados  # Debian's python3-rados, present where the ceph row runs (pools.rbd_unavailable_reason)

        self.pool, self.namespace, self.name = parse_locator(locator)
        self._rados = rados.Rados(conffile=str(conf_path))
        self._rados.connect(timeout=30)

    def close(self) -> None:
        self._rados.shutdown()

    def __enter__(self) -> RbdDisk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def image(self, read_only: bool = False, snapshot: str | None = None):
        import rbd

        with self._rados.open_ioctx(self.pool) as ioctx:
            ioctx.set_namespace(self.namespace)
            with rbd.Image(ioctx, self.name, snapshot=snapshot, read_only=read_only) as image:
                yield image

    def load(self, source: Path) -> int:
        """Writes the source file's data extents into the image at the same offsets; returns the bytes written."""
        written = 0
        with self.image() as image, open(source, "rb") as f:
            for start, end in data_extents(source):
                for offset, length in pieces(start, end):
                    f.seek(offset)
                    image.write(f.read(length), offset)
                    written += length
            image.flush()
        return written

    def change(self, percent: float, seed: int) -> int:
        """The standard workload's change step, into the image (the bytes mutate() writes into a file)."""
        with self.image() as image:
            size = image.size()
            count = 0
            for offset, data in change_writes(size, percent, seed):
                image.write(data, offset)
                count += len(data)
            image.flush()
        return count

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.image(read_only=True) as image:
            size = image.size()
            for offset, length in pieces(0, size):
                digest.update(image.read(offset, length))
        return digest.hexdigest()

    def cbr_snapshots(self) -> list[str]:
        with self.image(read_only=True) as image:
            return sorted(s["name"] for s in image.list_snaps() if s["name"].startswith("cbr-"))

    def diff_since(self, snapshot: str) -> list[tuple[int, int]]:
        """(offset, length) diff_iterate reports between the snapshot and the image now (sparse images report
        growth from an object's old end, so this is what a diff-driven backup may have to read)."""
        extents: list[tuple[int, int]] = []
        with self.image(read_only=True) as image:
            image.diff_iterate(0, image.size(), snapshot, lambda offset, length, exists: extents.append(
                (offset, length)))
        return extents
