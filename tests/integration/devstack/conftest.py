"""A folder for embedded servers' data outside pytest's temp root."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def server_dir():
    """As root, Postgres runs as another account, and every pytest session that starts meanwhile (from any
    checkout) makes /tmp/pytest-of-root private again, cutting that account off from folders below it."""
    folder = Path(tempfile.mkdtemp(prefix="cbr-devstack-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
