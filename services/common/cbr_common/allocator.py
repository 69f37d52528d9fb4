"""The C heap of processes that move big buffers (the backup worker): glibc's malloc raises its mmap threshold
each time a large block is freed, up to 32 MiB, so after the first few multi-MiB buffers (read batches, 4 MiB
messages, packs) later ones come from the heap, whose freed middle is not returned to the system: the resident
size grows by tens of MiB and stays. A fixed threshold keeps every block of MMAP_THRESHOLD or more in its own
mapping, returned when freed."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 20


def bound_heap() -> bool:
    """Pins glibc's mmap threshold (setting it turns the dynamic raise off); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; the worker's heap may keep freed buffers")
    return done
