"""Starting detached processes and watching or stopping them by recorded pid, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServerError(RuntimeError):
    """A server did not start or stop as asked; the message says which and why."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rindex(")") + 2:].split()


def is_alive(pid: int) -> bool:
    """Whether the process runs; a zombie counts as dead (orphans here may never be reaped)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_state(pid) not in (None, "Z", "X")


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state (R, S, T for stopped, Z for zombie...), or None when there is no such process."""
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the pid it names one process for good."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass(frozen=True)
class ProcessRecord:
    """One process the stack started, as kept in stack.json."""

    name: str
    pid: int
    start_ticks: int | None
    port: int | None = None

    @classmethod
    def of(cls, name: str, pid: int, port: int | None = None) -> ProcessRecord:
        return cls(name, pid, start_ticks(pid), port)

    def is_alive(self) -> bool:
        # A matching start time guards against a later, unrelated process that got the same pid.
        return is_alive(self.pid) and (self.start_ticks is None or start_ticks(self.pid) == self.start_ticks)

    def signal(self, signum: int) -> bool:
        """Sends the signal if this very process still runs; False when it was already gone."""
        if not self.is_alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True


def start_detached(argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                   cwd: Path | None = None) -> subprocess.Popen:
    """Starts a process in its own session, so it outlives the caller and ignores the terminal's Ctrl-C."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_processes(records: Iterable[ProcessRecord], timeout: float = 10.0) -> list[ProcessRecord]:
    """SIGTERM each recorded process, SIGKILL those still there after `timeout`; returns the ones that ran."""
    running = [record for record in records if record.signal(signal.SIGTERM)]
    for record in running:
        record.signal(signal.SIGCONT)  # a paused process would hold the SIGTERM until resumed
    if not wait_until(lambda: not any(record.is_alive() for record in running), timeout):
        for record in running:
            record.signal(signal.SIGKILL)
        wait_until(lambda: not any(record.is_alive() for record in running), 5.0)
    return running


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
