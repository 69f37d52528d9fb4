"""Where the embedded stack's run folder (and so its pool of disks and snapshots) lives for a service-path run.

"xfs": a loop-mounted XFS made with reflink=1 from a sparse file in the work folder, so that a snapshot is a
reflink clone; "ext4": a folder on the work folder's own file system; "rbd": a folder there too, for a stack
started with CBR_PROVIDER=ceph (its private Ceph cluster under the run folder: disks are RBD images, chunks go
to radosgw). The XFS mount is unmounted and its file removed at the end, also when the run fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

POOLS = ("xfs", "ext4", "rbd")


class PoolUnavailable(RuntimeError):
    """This pool cannot be made here; the message says why (the report shows it in the row)."""


def xfs_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root: the XFS loop mount needs root"
    if not shutil.which("mkfs.xfs"):
        return "mkfs.xfs is missing (apt-get install xfsprogs)"
    return None


def rbd_unavailable_reason() -> str | None:
    """Why the stack cannot run on a private Ceph here, or None."""
    if os.geteuid() != 0:
        return "not root: the private Ceph cluster's OSD needs root"
    from cbr_devstack.ceph import PACKAGES, missing_tools

    missing = missing_tools()
    if missing:
        return f"Ceph tools missing: {' '.join(missing)} (apt-get install {PACKAGES})"
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError as exc:
        return f"the rados/rbd Python modules are not importable ({exc}): make ceph-bindings"
    return None


def unavailable_reason(kind: str) -> str | None:
    return {"xfs": xfs_unavailable_reason, "rbd": rbd_unavailable_reason}.get(kind, lambda: None)()


def _run(argv: list[str], timeout: float = 300) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise PoolUnavailable(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


@contextlib.contextmanager
def pool_folder(kind: str, work: Path, size_bytes: int) -> Iterator[Path]:
    """A folder for the stack's run folder on the given kind of pool; size_bytes sizes the XFS file system."""
    work.mkdir(parents=True, exist_ok=True)
    if kind in ("ext4", "rbd"):
        if kind == "rbd" and rbd_unavailable_reason():
            raise PoolUnavailable(rbd_unavailable_reason())
        folder = work / f"pool-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if kind != "xfs":
        raise ValueError(f"unknown pool {kind!r}")
    why = xfs_unavailable_reason()
    if why:
        raise PoolUnavailable(why)
    image, mount = work / "pool-xfs.img", work / "pool-xfs"
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(size_bytes)  # sparse: only what the stack writes takes space
    device, mounted = "", False
    try:
        _run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)])
        # Direct I/O from the loop device to its file: without it every read goes through two page caches (the
        # XFS file's and the backing file's), which costs a full backup about as much as the copy it saves, and
        # no real XFS pool pays that.
        device = _run(["losetup", "--find", "--show", "--direct-io=on", str(image)]).strip()
        mount.mkdir(exist_ok=True)
        _run(["mount", device, str(mount)])
        mounted = True
        os.chmod(mount, 0o755)  # Postgres runs as its own account under the run folder
        yield mount
    finally:
        if mounted and subprocess.run(["umount", str(mount)], capture_output=True, timeout=300).returncode != 0:
            # Still busy (a process of the stack did not stop): detach now, the kernel finishes when it can.
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=300)
        if device:
            # After a lazy umount this marks the device to go once the kernel lets go of it.
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
        with contextlib.suppress(OSError):
            mount.rmdir()
        image.unlink(missing_ok=True)
