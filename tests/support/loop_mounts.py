"""Real file systems on loop devices for tests that need a given kind (XFS with reflinks, ext4 without): a sparse
image file, mkfs, `mount -o loop` (CI runs as root), unmounted and removed at the end."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

MKFS = {
    "xfs": (["mkfs.xfs", "-q", "-f", "-m", "reflink=1"], "xfsprogs"),
    "ext4": (["mkfs.ext4", "-q", "-F"], "e2fsprogs"),
}


def require_mkfs(kind: str) -> list[str]:
    """The mkfs command line for kind; installs its Debian package when the tool is missing, and fails loudly
    when it cannot (a test that needs XFS must not quietly run on something else)."""
    command, package = MKFS[kind]
    if shutil.which(command[0]) is None:
        result = subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, text=True,
                                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if shutil.which(command[0]) is None:
            raise RuntimeError(f"{command[0]} is missing and installing {package} failed: {result.stderr[-500:]}")
    return command


@contextlib.contextmanager
def loop_file_system(kind: str, folder: Path, size_bytes: int):
    """A fresh file system of kind (xfs or ext4) of size_bytes, mounted at folder/mnt for the duration."""
    command = require_mkfs(kind)
    folder.mkdir(parents=True, exist_ok=True)
    image, mount_point = folder / f"{kind}.img", folder / "mnt"
    with open(image, "wb") as f:
        f.truncate(size_bytes)  # sparse: the image takes only what the file system writes
    try:
        subprocess.run([*command, str(image)], check=True, capture_output=True)
        mount_point.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True, capture_output=True)
        try:
            found = subprocess.run(["stat", "-f", "-c", "%T", str(mount_point)], check=True, capture_output=True,
                                   text=True).stdout.strip()
            if kind not in found and not (kind == "ext4" and found.startswith("ext")):
                raise RuntimeError(f"{mount_point} is {found}, not {kind}")
            yield mount_point
        finally:
            # Lazy: a thread that still holds a file there must not make the session fail to clean up.
            subprocess.run(["umount", "-l", str(mount_point)], check=True, capture_output=True)
    finally:
        image.unlink(missing_ok=True)
