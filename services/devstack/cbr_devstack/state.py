"""The two records of a run folder: stack.json, what the stack is (ports, JWT secret, dev token; kept from the
first `up` until `wipe`), and processes.json, what runs now (the only processes `down` may stop)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cbr_devstack.processes import ProcessRecord


@dataclass(frozen=True)
class StackConfig:
    """Chosen on the first `up` and reused by every later one, so cbr.env and stored addresses stay valid."""

    jwt_secret: str
    ports: dict[str, int]   # by server name: postgres, nats and each service
    dev_token: str          # the token cbr.env hands to clients
    dev_token_expires: int  # when it expires, in seconds since the epoch
    provider: str = "local"  # local, or ceph: disks on RBD and chunks in RGW of a private cluster (chosen once)
    region: str = "local"    # CBR_REGION of every service (chosen once: backups and vaults record it)
    regions_file: str = ""   # CBR_REGIONS_FILE: the peer regions, as `up-regions` wires them
    transfer_tls: bool = False  # `up-regions --tls`: RegionTransferService on ports["transfer"] with a certificate
    nats_nodes: int = 1      # CBR_NATS_NODES at the first `up`: 1 server, or 3 clustered (cbr_devstack.nats_cluster)


@dataclass
class RunningProcesses:
    processes: list[ProcessRecord] = field(default_factory=list)
    complete: bool = False  # set once every service answered its health check

    def find(self, name: str) -> ProcessRecord | None:
        return next((record for record in self.processes if record.name == name), None)

    def alive(self) -> list[ProcessRecord]:
        return [record for record in self.processes if record.is_alive()]

    def all_running(self) -> bool:
        return self.complete and all(record.is_alive() for record in self.processes)


class EarlierVersionError(RuntimeError):
    """stack.json was written by a devstack that kept its processes there and ran with new ports each time."""


def load_config(path: Path) -> StackConfig | None:
    raw = _read(path)
    if raw is not None and "processes" in raw:
        raise EarlierVersionError(f"{path} is from an earlier cbr_devstack, whose stack may still run: stop it with "
                                  f"that version's `make down`, or remove the file if nothing of it runs")
    return None if raw is None else StackConfig(**raw)


def save_config(path: Path, config: StackConfig) -> None:
    _write(path, asdict(config))


def load_running(path: Path) -> RunningProcesses | None:
    raw = _read(path)
    if raw is None:
        return None
    return RunningProcesses([ProcessRecord(**record) for record in raw["processes"]], raw["complete"])


def save_running(path: Path, running: RunningProcesses) -> None:
    _write(path, asdict(running))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write(path: Path, content: dict) -> None:
    """Replaces the file in one step; mode 0600 because stack.json holds the secret that signs tokens."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(content, file, indent=2)
    os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
    os.replace(temporary, path)
