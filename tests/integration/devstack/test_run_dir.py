"""A run folder without a real stack: kept ports, the records' files, `status` exit codes, `wipe`, and the hints
printed for the next command (run as printed)."""

from __future__ import annotations

import dataclasses
import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbr_devstack import stack
from cbr_devstack.__main__ import main
from cbr_devstack.ports import ephemeral_range, kept_port, port_in_use
from cbr_devstack.processes import ProcessRecord, start_detached, stop_processes
from cbr_devstack.state import (EarlierVersionError, RunningProcesses, StackConfig, load_config, save_config,
                                save_running)


@pytest.fixture
def sleeper(tmp_path):
    """A process of our own for the records to point at."""
    process = start_detached([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "sleep.log")
    try:
        yield ProcessRecord.of("vault", process.pid, 1)
    finally:
        process.kill()
        process.wait()


def record_running(run_dir: Path, *records: ProcessRecord, complete: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_running(stack.RunDir(run_dir).processes_file, RunningProcesses(list(records), complete))


def test_kept_ports_are_free_distinct_and_outside_the_ephemeral_range():
    low, high = ephemeral_range()
    ports: list[int] = []
    for _ in range(6):
        ports.append(kept_port(taken=ports))
    assert len(set(ports)) == 6
    assert not [port for port in ports if low <= port <= high or port_in_use(port)]


def test_port_in_use_sees_a_listener_and_not_a_closed_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_stack_json_is_private_and_an_earlier_versions_file_is_refused(tmp_path):
    path = tmp_path / "stack.json"
    config = StackConfig("s" * 64, {"postgres": 20001, "vault": 20002}, "token", 2_000_000_000)
    save_config(path, config)
    assert load_config(path) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    path.write_text(json.dumps({"jwt_secret": "x", "processes": [], "complete": True}))
    with pytest.raises(EarlierVersionError, match="earlier cbr_devstack"):
        load_config(path)
    assert main(["wipe", "--run-dir", str(tmp_path)]) == 1 and path.exists()  # never under a stack it cannot see


def test_status_codes_and_its_stop_hint_runs_as_printed(tmp_path, sleeper, capsys):
    run_dir = tmp_path / "a run dir"  # the hint must quote the space
    assert stack.status(run_dir) == stack.NOT_RUNNING

    record_running(run_dir, sleeper)
    assert stack.status(run_dir) == stack.RUNNING
    hint = capsys.readouterr().out.strip().rsplit("Stop it with: ", 1)[1]
    assert hint.endswith(f"-m cbr_devstack down --run-dir '{run_dir}'")

    dead = ProcessRecord("worker", sleeper.pid, sleeper.start_ticks - 1)  # same pid, another start: not ours
    record_running(run_dir, sleeper, dead)
    assert stack.status(run_dir) == stack.PARTLY_RUNNING
    assert "not running: worker" in capsys.readouterr().out
    record_running(run_dir, sleeper, complete=False)
    assert stack.status(run_dir) == stack.PARTLY_RUNNING
    assert "start-up (not finished" in capsys.readouterr().out

    record_running(run_dir, sleeper)
    stopped = subprocess.run(hint, shell=True, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"stopped vault (pid {sleeper.pid})" in stopped.stdout and not sleeper.is_alive()
    assert stack.status(run_dir) == stack.NOT_RUNNING
    assert not stack.RunDir(run_dir).processes_file.exists()


def test_wipe_is_refused_while_anything_runs_and_removes_only_the_stacks_files(tmp_path, sleeper, capsys):
    run_dir = tmp_path / "run"
    layout = stack.RunDir(run_dir)
    for folder in (layout.pg_data, layout.nats_store, layout.store, layout.pool, layout.logs):
        folder.mkdir(parents=True)
        (folder / "kept").write_text("data")
    save_config(layout.config_file, StackConfig("secret", {"vault": 20002}, "token", 2_000_000_000))
    layout.env_file.write_text("CBR_TOKEN=token\n")
    layout.kek_file.write_bytes(b"k" * 32)
    (run_dir / "notes.txt").write_text("not the stack's")
    record_running(run_dir, sleeper)

    assert stack.wipe(run_dir) == 1
    assert f"stop it first with: {stack.command_hint('down', run_dir)}" in capsys.readouterr().err
    assert (layout.store / "kept").exists() and layout.config_file.exists()

    stop_processes([sleeper], timeout=5.0)
    assert stack.wipe(run_dir) == 0
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt", "stack.lock"]
    assert stack.wipe(run_dir) == 0 and "Nothing to wipe" in capsys.readouterr().out


def test_hints_name_make_only_for_the_default_run_folder_of_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python = sys.executable  # outside tmp_path, so shown whole
    assert stack.command_hint("down", Path(".run")) == f"{python} -m cbr_devstack down --run-dir .run"
    (tmp_path / "Makefile").write_text("down:\n")
    assert stack.command_hint("down", Path(".run")) == "make down"
    assert stack.command_hint("down", tmp_path / ".run") == "make down"
    assert stack.command_hint("up", Path(".run"), "--new-ports") == (
        f"{python} -m cbr_devstack up --run-dir .run --new-ports")
    assert stack.command_hint("down", Path("other")) == f"{python} -m cbr_devstack down --run-dir other"


def test_the_kept_config_is_completed_and_renewed_but_never_changed_otherwise(tmp_path):
    layout = stack.RunDir(tmp_path)
    fresh = stack._config_for_start(layout, new_ports=False)
    assert list(fresh.ports) == list(stack.KEPT_PORTS) and len(set(fresh.ports.values())) == len(stack.KEPT_PORTS)
    assert {"vault_metrics", "backup_metrics", "policy_metrics", "replication_metrics", "worker_metrics"} <= set(
        fresh.ports)
    assert fresh.dev_token_expires > time.time() + 300 * 24 * 3600
    assert stack._config_for_start(layout, new_ports=False) == fresh == load_config(layout.config_file)

    # A server added since the first start gets a port (as do the metrics of a stack from before them); a token in
    # its last week is renewed; nothing else moves.
    added = ("policy", "worker_metrics")
    older = dataclasses.replace(fresh, ports={name: port for name, port in fresh.ports.items() if name not in added},
                                dev_token="expiring", dev_token_expires=int(time.time()) + 3600)
    save_config(layout.config_file, older)
    completed = stack._config_for_start(layout, new_ports=False)
    assert {name: port for name, port in completed.ports.items() if name not in added} == older.ports
    assert not {completed.ports[name] for name in added} & set(older.ports.values())
    assert completed.dev_token != "expiring" and completed.dev_token_expires > time.time() + 300 * 24 * 3600
    assert completed.jwt_secret == fresh.jwt_secret

    moved = stack._config_for_start(layout, new_ports=True)
    assert moved.ports != completed.ports
    assert (moved.jwt_secret, moved.dev_token) == (completed.jwt_secret, completed.dev_token)


def test_cbr_env_names_each_process_metrics_address(tmp_path):
    layout = stack.RunDir(tmp_path)
    config = stack._config_for_start(layout, new_ports=False)
    stack._write_env_file(layout, config)
    env = dict(line.split("=", 1) for line in layout.env_file.read_text().splitlines() if not line.startswith("#"))
    metrics = {f"CBR_{name}_METRICS_ADDR": config.ports[f"{name.lower()}_metrics"]
               for name in ("VAULT", "BACKUP", "POLICY", "REPLICATION", "WORKER")}
    assert {key: env[key] for key in metrics} == {key: f"127.0.0.1:{port}" for key, port in metrics.items()}
    services = {int(env[f"CBR_{name}_ADDR"].rsplit(":", 1)[1]) for name in ("VAULT", "BACKUP", "POLICY", "REPLICATION")}
    assert len(set(metrics.values()) | services) == 9  # every process its own two ports
