"""Several processes of every CBR service on one test Infra, each on its own port, that a test can SIGKILL one by
one; CBR_<SERVICE>_ADDR of each lists all replicas of the others, as the embedded stack's --replicas does."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cbr_devstack.health import wait_serving
from cbr_devstack.ports import free_port
from tests.support.services import JOB_LEASE_SECONDS, kek_file

SERVICES = ("vault", "backup", "policy", "replication")
START_TIMEOUT = 90.0  # eight Python processes importing at once on a shared 2-core machine


@dataclass
class Replica:
    service: str
    index: int
    address: str
    metrics: str
    process: subprocess.Popen
    log: Path

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def kill(self) -> None:
        """SIGKILL: no graceful stop, its connections break as a crash breaks them."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def calls(self, method: str) -> float:
        """How many calls of `method` this replica answered (its /metrics)."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=5) as response:
            text = response.read().decode()
        series = re.finditer(r'^cbr_rpc_calls_total\{[^}]*method="' + re.escape(method) + r'"[^}]*\} (\S+)$',
                             text, re.M)
        return sum(float(match[1]) for match in series)  # every status code's series


@dataclass
class ReplicatedServices:
    infra: object
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    @classmethod
    def start(cls, infra, count: int = 2, **env) -> "ReplicatedServices":
        ports = {service: [free_port() for _ in range(count)] for service in SERVICES}
        lists = {service: ",".join(f"127.0.0.1:{p}" for p in ports[service]) for service in SERVICES}
        base = dict(os.environ, CBR_DATABASE_URL=infra.postgres.url, CBR_NATS_URL=infra.nats.url,
                    CBR_JWT_SECRET=infra.jwt_secret, CBR_POOL_DIR=str(infra.base / "pool"),
                    CBR_FS_ROOT=str(infra.base / "fs"), CBR_STORE_DIR=str(infra.base / "store"),
                    CBR_KEK_FILE=str(kek_file(infra)), CBR_JOB_LEASE_SECONDS=str(JOB_LEASE_SECONDS),
                    CBR_OUTBOX_POLL_SECONDS="0.2", PYTHONUNBUFFERED="1",
                    **{f"CBR_{s.upper()}_ADDR": lists[s] for s in SERVICES}, **env)
        stack = cls(infra)
        logs = infra.base / "replica-logs"
        logs.mkdir(exist_ok=True)
        try:
            for service in SERVICES:
                for index, port in enumerate(ports[service], start=1):
                    metrics = f"127.0.0.1:{free_port()}"
                    log = logs / f"{service}-{index}.log"
                    with open(log, "ab") as out:
                        process = subprocess.Popen(
                            [sys.executable, "-m", f"cbr_{service}"], stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT,
                            env={**base, "CBR_LISTEN_ADDR": f"127.0.0.1:{port}", "CBR_METRICS_ADDR": metrics})
                    stack.replicas.setdefault(service, []).append(
                        Replica(service, index, f"127.0.0.1:{port}", metrics, process, log))
            everyone = [r for rs in stack.replicas.values() for r in rs]
            wait_serving({r.name: r.address for r in everyone}, START_TIMEOUT,
                         alive=lambda name: next(r for r in everyone if r.name == name).process.poll() is None)
        except BaseException:
            stack.stop()
            raise
        return stack

    def address(self, service: str) -> str:
        """CBR_<SERVICE>_ADDR as a client sets it: every replica, comma-separated."""
        return ",".join(r.address for r in self.replicas[service])

    def stop(self) -> None:
        everyone = [r for rs in self.replicas.values() for r in rs]
        for replica in everyone:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in everyone:
            try:
                replica.process.wait(15)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(5)
