"""`make demo` as a user runs it: it starts the embedded stack, backs a disk up and restores it with every checksum
matching, leaves the stack running, and runs again on the same stack."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cbr_devstack.processes import is_alive
from tests.e2e.test_embedded_stack import devstack, recorded_pids, run_dir  # noqa: F401 (run_dir: a fixture)


def demo(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # Addresses exported for some other stack must not matter: the demo talks to the stack in its run folder.
    env = dict(os.environ, CBR_BACKUP_ADDR="127.0.0.1:1", CBR_VAULT_ADDR="127.0.0.1:1", CBR_TOKEN="not-this-one")
    return subprocess.run([sys.executable, "-m", "cbr_devstack.demo", "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=240, env=env)


def summary_rows(stdout: str) -> dict[str, str]:
    """The summary table's rows by step name."""
    steps = ("full backup", "incremental backup", "incremental → new disk", "full → source disk, in place")
    return {step: line for line in stdout.splitlines() for step in steps if line.startswith(step + " ")}


def test_demo_round_trip_twice_on_one_stack(run_dir):
    try:
        started = time.monotonic()
        first = demo(run_dir)
        took = time.monotonic() - started
        assert first.returncode == 0, first.stdout + first.stderr
        assert took < 60, f"the demo took {took:.0f} s"
        assert "CBR is up" in first.stdout  # it started the stack itself
        rows = summary_rows(first.stdout)
        assert len(rows) == 4, first.stdout
        assert "recorded" in rows["full backup"] and "recorded" in rows["incremental backup"]
        assert "matches" in rows["incremental → new disk"] and "matches" in rows["full → source disk, in place"]
        assert "2 of 2 restored images match the checksums taken at backup time." in first.stdout
        assert f"down --run-dir {run_dir}" in first.stdout  # how to stop it
        pids = recorded_pids(run_dir)
        assert pids and all(is_alive(pid) for pid in pids)  # left running

        second = demo(run_dir, "--size", "32M", "--seed", "2")  # new names: nothing clashes with the first run
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stdout and "2 of 2 restored images match" in second.stdout
        assert recorded_pids(run_dir) == pids
    finally:
        down = devstack("down", run_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if is_alive(pid)]
