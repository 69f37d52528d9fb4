"""Giving back what a job freed: a long-lived worker's malloc keeps freed memory in its per-thread arenas (the
pipeline's, librados') for reuse, so each job's peak counted the previous job's leftovers on top of its own
(DESIGN.md 15.4). glibc's malloc_trim(0) returns the free pages of every arena to the system."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


def give_back_freed_memory() -> bool:
    """Returns free heap pages to the system; False where the C library has no malloc_trim."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
