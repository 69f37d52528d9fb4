"""The record of a running stack, .run/stack.json: the only processes `down` may stop, and the JWT secret."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cbr_devstack.processes import ProcessRecord


@dataclass
class StackState:
    jwt_secret: str
    processes: list[ProcessRecord] = field(default_factory=list)
    database_url: str = ""
    nats_url: str = ""
    complete: bool = False  # set once every service answered its health check

    def find(self, name: str) -> ProcessRecord | None:
        return next((record for record in self.processes if record.name == name), None)


def load_state(path: Path) -> StackState | None:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    raw["processes"] = [ProcessRecord(**record) for record in raw.get("processes", [])]
    return StackState(**raw)


def save_state(path: Path, state: StackState) -> None:
    """Replaces the file in one step; mode 0600 because it holds the secret that signs tokens."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(state), file, indent=2)
    os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
    os.replace(temporary, path)
