"""Per-phase seconds of one backup or restore, summed over the pipeline's threads, for the job's log line.

A phase's seconds are thread-seconds: with several workers they add up to more than the wall time, and
`cpu_seconds / seconds` (process CPU over wall) says how busy the cores were. Timed per piece or per batch,
never per chunk, so the timers cost nothing measurable.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict


class Phases:
    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._cpu0 = os.times()
        self._wall0 = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] += seconds

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def summary(self) -> dict:
        """{"phases": {name: thread-seconds}, "cpu_seconds": process CPU since start (user + system),
        "system_seconds": its kernel part, "wall_seconds": ...}."""
        with self._lock:
            phases = {name: round(s, 3) for name, s in self._seconds.items()}
        now = os.times()
        user, system = now.user - self._cpu0.user, now.system - self._cpu0.system
        return {"phases": phases, "cpu_seconds": round(user + system, 3), "system_seconds": round(system, 3),
                "wall_seconds": round(time.perf_counter() - self._wall0, 3)}
