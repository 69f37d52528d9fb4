"""The fault suite's own Postgres, NATS and services (tests here stop, pause and kill them), and the means to."""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.support.services import Services
from tests.support.stack import Infra


@pytest.fixture(scope="package")
def fault_infra():
    infra = Infra.start()
    yield infra
    infra.stop()


@pytest.fixture(scope="package")
async def fault_services(fault_infra):
    services = await Services.start(fault_infra, workers=0)
    yield services
    await services.stop()


@pytest.fixture
def fault_caller(fault_services):
    return fault_services.caller()


def postgres_pids(cluster) -> list[int]:
    """The postmaster and its children (the backends serving connections): pausing only the postmaster would
    leave open connections answering."""
    root = cluster.pid
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                # the field after the parenthesised command name: state, then the parent's pid
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == root:
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def postgres_paused(cluster):
    """SIGSTOP to every process of the test's own cluster (never another's), SIGCONT when the block ends."""
    pids = postgres_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
