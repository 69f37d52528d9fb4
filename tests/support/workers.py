"""Backup workers a test runs itself: as processes (to kill them) or in the test's loop with settings of its own."""
from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest


@contextlib.contextmanager
def worker_processes(services, count: int = 1, **env):
    """`python -m cbr_backup.worker` processes on the test stack; env overrides its settings (CBR_...)."""
    procs = [subprocess.Popen([sys.executable, "-m", "cbr_backup.worker"], env=services.worker_env(**env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextlib.asynccontextmanager
async def without_shared_workers(services):
    """The session's in-process worker is stopped for the block, so the test's own workers get the jobs."""
    await services.stop_workers()
    try:
        yield services
    finally:
        await services.stop_workers()
        await services.start_worker()


@pytest.fixture
async def no_inprocess_workers(services):
    """The fixture form of without_shared_workers: jobs wait until the test starts workers of its own."""
    async with without_shared_workers(services):
        yield services


def is_worker_of(worker_id: str, pid: int) -> bool:
    """Whether a task's worker id (`<host>:<6 hex>:<pid>`, cbr_backup.worker.runner) names this process here."""
    import re
    import socket
    host, _, rest = worker_id.partition(":")
    return host == socket.gethostname()[:40] and re.fullmatch(rf"[0-9a-f]{{6}}:{pid}", rest) is not None
