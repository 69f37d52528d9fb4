"""The second workload, "usr": a real file system in a disk image, and a seeded change step inside it.

A sparse image (default 4 GiB) formatted ext4 and filled, through a loop mount, with a fixed selection of the
regular files under /usr: paths sorted, files taken in that order until the budget (default 2.5 GB) is reached,
unreadable ones skipped. On every machine with the same /usr the selection is the same.

The change step touches about 2% of the file data, planned from a seed by change_plan() (a pure function of the
selection and the seed): appends to some files, in-place rewrites inside others, new files and deletions. It is
applied once, through a loop mount, to a copy of the image (then unmounted, so the image is consistent); the
blocks that differ between the two images are the step's delta, and every tool's disk gets exactly that delta
(apply_delta). File-system metadata (times) differs from one mount to the next, so applying the plan to each
tool's copy would not give the same bytes; the delta does, and writes only the blocks the change wrote.

Needs root (loop mounts) and mkfs.ext4; build() raises UsrUnavailable saying why otherwise.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from bench.workload import MIB, TextSource, _pwrite_all

GIB = 1 << 30
DEFAULT_IMAGE_BYTES = 4 * GIB
DEFAULT_FILL_BYTES = 2_500_000_000
CHANGE_PERCENT = 2.0
CHANGE_SEED = 11
DELTA_BLOCK = 4096  # ext4's block size: the unit of the delta between the two images
# How the change step's bytes are shared between its kinds (deletions count the bytes they remove).
CHANGE_MIX = (("append", 0.25), ("rewrite", 0.40), ("new", 0.20), ("delete", 0.15))


class UsrUnavailable(RuntimeError):
    """The usr workload cannot be built here (not root, no mkfs.ext4, no loop device, no /usr)."""


@dataclass(frozen=True)
class Op:
    kind: str          # append | rewrite | new | delete
    path: str          # relative to the file system's root
    offset: int = 0    # rewrite: where, in the file
    length: int = 0    # bytes appended, rewritten or written; for delete, the file's size

    def as_list(self) -> list:
        return [self.kind, self.path, self.offset, self.length]


# --- the selection (pure, given the listing) ----------------------------------------------------------------------

def scan(root: str | os.PathLike = "/usr") -> Iterator[tuple[str, int]]:
    """(relative path, size) of every regular file under root, sorted by path (as strings); symlinks are not
    followed."""
    root = str(root)
    found = []
    for folder, _, names in os.walk(root, onerror=lambda exc: None):
        for name in names:
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((os.path.relpath(full, root), st.st_size))
    yield from sorted(found)


def select(listing: Iterable[tuple[str, int]], budget: int, readable=None) -> list[tuple[str, int]]:
    """The files of a sorted listing, in order, until their sizes reach budget; readable(path) may skip some."""
    chosen, total = [], 0
    for path, size in listing:
        if total >= budget:
            break
        if readable is not None and not readable(path):
            continue
        chosen.append((path, size))
        total += size
    return chosen


# --- the change step (pure plan) ----------------------------------------------------------------------------------

def change_plan(files: list[tuple[str, int]], seed: int = CHANGE_SEED,
                percent: float = CHANGE_PERCENT) -> list[Op]:
    """A seeded plan touching about percent% of the files' bytes: appends, rewrites, new files, deletions.

    Only files of at least 4 KiB are changed (tiny files make tiny changes); no file is picked twice."""
    rng = random.Random(f"cbr-bench-usr-change-{seed}")
    total = sum(size for _, size in files)
    candidates = sorted(i for i, (_, size) in enumerate(files) if size >= 4096)
    rng.shuffle(candidates)
    ops: list[Op] = []
    for kind, share in CHANGE_MIX:
        budget = int(total * percent / 100 * share)
        if kind == "new":
            n = 0
            while budget > 0:
                length = min(budget, rng.randint(16 << 10, 4 << 20))
                ops.append(Op("new", f"bench-new/{seed}-{n:05d}.dat", 0, length))
                budget -= length
                n += 1
            continue
        while budget > 0 and candidates:
            path, size = files[candidates.pop()]
            if kind == "delete":
                if size > budget:  # a big file would overshoot the share: left as it is
                    continue
                ops.append(Op("delete", path, 0, size))
                budget -= size
            elif kind == "append":
                length = min(budget, max(4096, size // rng.randint(4, 20)))
                ops.append(Op("append", path, size, length))
                budget -= length
            else:  # rewrite: a stretch inside the file, same size
                length = min(budget, size, max(4096, size // rng.randint(2, 8)))
                offset = rng.randrange(0, size - length + 1)
                ops.append(Op("rewrite", path, offset, length))
                budget -= length
    return ops


def plan_bytes(ops: list[Op]) -> int:
    return sum(op.length for op in ops)


def apply_plan(root: Path, ops: list[Op], seed: int = CHANGE_SEED) -> None:
    """Applies the plan under a mounted root; the bytes written are text-like, drawn from the seed."""
    rng = random.Random(f"cbr-bench-usr-bytes-{seed}")
    text = TextSource(seed)
    for op in ops:
        target = root / op.path
        if op.kind == "delete":
            target.unlink()
            continue
        data = text.block(rng, op.length)
        if op.kind == "new":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        else:
            with open(target, "r+b") as f:
                f.seek(op.offset)
                f.write(data)


# --- images -------------------------------------------------------------------------------------------------------

def check_available() -> None:
    if os.geteuid() != 0:
        raise UsrUnavailable("the usr workload needs root (loop mounts)")
    for tool in ("mkfs.ext4", "mount", "umount"):
        if not shutil.which(tool):
            raise UsrUnavailable(f"{tool} is not installed")
    if not Path("/usr").is_dir():
        raise UsrUnavailable("there is no /usr")


def _run(argv: list[str], timeout: float = 600) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise UsrUnavailable(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-300:]}")


@contextlib.contextmanager
def loop_mounted(image: Path, work: Path) -> Iterator[Path]:
    """The image mounted read-write on a fresh folder in work; unmounted (flushed) and the folder removed after."""
    mount = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    try:
        _run(["mount", "-o", "loop", str(image), str(mount)])
        try:
            yield mount
        finally:
            _run(["umount", str(mount)])
    finally:
        mount.rmdir()


def _readable(root: Path):
    def check(rel: str) -> bool:
        try:
            with open(root / rel, "rb") as f:
                f.read(1)
            return True
        except OSError:
            return False
    return check


def build(image: Path, work: Path, *, image_bytes: int = DEFAULT_IMAGE_BYTES, fill_bytes: int = DEFAULT_FILL_BYTES,
          source: Path = Path("/usr")) -> list[tuple[str, int]]:
    """Makes the ext4 image with the selection copied in; returns the selection (path, size)."""
    check_available()
    files = select(scan(source), fill_bytes, readable=_readable(source))
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(image_bytes)
    # Inode tables and journal written now, not by a background thread while a tool reads the image.
    _run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
    with loop_mounted(image, work) as mount:
        for rel, _ in files:
            target = mount / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, target, follow_symlinks=False)
    return files


def make_changed(image: Path, changed: Path, work: Path, ops: list[Op], seed: int = CHANGE_SEED) -> None:
    """changed = image after the plan, applied through a loop mount of a copy of it."""
    from bench.workload import sparse_copy
    sparse_copy(image, changed)
    with loop_mounted(changed, work) as mount:
        apply_plan(mount, ops, seed)


def diff_blocks(a: Path, b: Path, block: int = DELTA_BLOCK, chunk: int = 4 * MIB) -> list[int]:
    """Offsets of the block-sized pieces that differ between two files of the same size."""
    out: list[int] = []
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        offset = 0
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not x and not y:
                break
            if x != y:
                for i in range(0, max(len(x), len(y)), block):
                    if x[i:i + block] != y[i:i + block]:
                        out.append(offset + i)
            offset += chunk
    return out


def apply_delta(target: Path, changed: Path, offsets: list[int], block: int = DELTA_BLOCK) -> None:
    """Writes changed's blocks at offsets into target, in place, and syncs: the change step for one tool."""
    fd = os.open(target, os.O_WRONLY)
    try:
        with open(changed, "rb", buffering=0) as src:
            for offset in offsets:
                src.seek(offset)
                _pwrite_all(fd, src.read(block), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
