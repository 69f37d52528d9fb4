"""`python -m cbr_devstack up --replicas 2`: two processes of every service, cbr.env listing both, the `cbr` CLI
balancing over them and still answering after one replica of each is SIGKILLed; a later `up` keeps the count and
`down` stops every replica."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cbr_devstack.processes import is_alive
from tests.e2e.test_embedded_stack import devstack, read_env, recorded_pids, run_dir  # noqa: F401 (fixture)

SERVICES = ("vault", "backup", "policy", "replication")


def cli(run_dir, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBR_")}
    return subprocess.run([sys.executable, "-m", "cbr_cli", "--env-file", str(run_dir / "cbr.env"), "--json", *argv],
                          capture_output=True, text=True, timeout=60, env=env)


def processes(run_dir) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((run_dir / "processes.json").read_text())["processes"]}


@pytest.fixture
def replicated(run_dir):  # noqa: F811
    up = devstack("up", run_dir, "--replicas", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield run_dir
    finally:
        devstack("down", run_dir)


def test_two_replicas_of_each_service_serve_the_cli_through_a_kill_and_stop_together(replicated):
    run_dir = replicated
    env = read_env(run_dir / "cbr.env")
    recorded = processes(run_dir)
    for service in SERVICES:
        first, second = recorded[service], recorded[f"{service}-2"]
        assert env[f"CBR_{service.upper()}_ADDR"] == f"127.0.0.1:{first['port']},127.0.0.1:{second['port']}"
        assert is_alive(first["pid"]) and is_alive(second["pid"])

    made = cli(run_dir, "vault", "create", "replicated", "--type", "disk", "--size", "10G")
    assert made.returncode == 0, made.stdout + made.stderr
    for service in SERVICES:
        os.kill(recorded[service]["pid"], signal.SIGKILL)
    for _ in range(4):  # each a new process: its channel finds the live replica among the two listed
        listed = cli(run_dir, "vault", "list")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert [v["name"] for v in json.loads(listed.stdout)["items"]] == ["replicated"]
        assert cli(run_dir, "policy", "list").returncode == 0
        assert cli(run_dir, "backup", "list").returncode == 0

    status = devstack("status", run_dir)
    assert status.returncode == 1 and "vault" in status.stdout  # partly running: the killed replicas are named
    again = devstack("up", run_dir)  # restarts what is left, with as many replicas as before
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_env(run_dir / "cbr.env") == env
    pids = recorded_pids(run_dir)
    assert len([name for name in processes(run_dir) if name.split("-")[0] in SERVICES]) == 8

    down = devstack("down", run_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if is_alive(pid)]
