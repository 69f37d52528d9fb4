"""A small real file system for tests that must fill one: a tmpfs of a given size, mounted by the test (CI runs
as root) and unmounted after it."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path


@contextlib.contextmanager
def small_file_system(mount_point: Path, size_bytes: int):
    """Mounts a tmpfs of size_bytes at mount_point (created if missing) for the duration."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(mount_point)],
                   check=True, capture_output=True)
    try:
        yield mount_point
    finally:
        # Lazy: a worker thread that still holds a file there must not make the test fail to clean up.
        subprocess.run(["umount", "-l", str(mount_point)], check=True, capture_output=True)
