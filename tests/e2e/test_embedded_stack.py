"""`python -m cbr_devstack up|down|status|wipe` as a user runs it: four SERVING services, reflection, the dev token
works; a restart keeps cbr.env and the data, a taken port is named, and only `wipe` starts from nothing."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from cbr.vault.v1 import vault_pb2_grpc
from cbr_common.grpc_errors import cbr_code_of
from cbr_devstack.processes import is_alive

EXPECTED_SERVICES = {
    "CBR_VAULT_ADDR": {"cbr.vault.v1.VaultService"},
    "CBR_BACKUP_ADDR": {"cbr.backup.v1.ProtectableService", "cbr.backup.v1.BackupService",
                        "cbr.backup.v1.TaskService", "cbr.replication.v1.RegionTransferService"},
    "CBR_POLICY_ADDR": {"cbr.policy.v1.PolicyService"},
    "CBR_REPLICATION_ADDR": {"cbr.replication.v1.ReplicationService"},
}


def devstack(command: str, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir), *options],
                          capture_output=True, text=True, timeout=240)


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def recorded_pids(run_dir: Path) -> list[int]:
    state = json.loads((run_dir / "processes.json").read_text())
    found: list[int] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "pid" and isinstance(value, int):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(state)
    return found


@pytest.fixture
def run_dir():
    """A run folder outside pytest's temp root: as root, Postgres runs as another user, and every pytest session
    that starts meanwhile (from any checkout) makes /tmp/pytest-of-root private again, cutting the server off."""
    folder = Path(tempfile.mkdtemp(prefix="cbr-devstack-"))
    try:
        yield folder / "run"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stack(run_dir):
    up = devstack("up", run_dir)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield run_dir
    finally:
        devstack("down", run_dir)


def reflected_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=10)
        return {s.name for reply in replies for s in reply.list_services_response.service}


def test_up_serves_everything_and_down_stops_it(stack):
    run_dir = stack
    env = read_env(run_dir / "cbr.env")
    for key, services in EXPECTED_SERVICES.items():
        with grpc.insecure_channel(env[key]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert services <= reflected_services(env[key])

    md = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
    with grpc.insecure_channel(env["CBR_VAULT_ADDR"]) as channel:
        vaults = vault_pb2_grpc.VaultServiceStub(channel)
        vault = vaults.CreateVault(vp.CreateVaultRequest(name="e2e", object_type=cp.OBJECT_TYPE_DISK,
                                                         protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10),
                                   metadata=md, timeout=10).vault
        assert vaults.ListVaults(vp.ListVaultsRequest(), metadata=md, timeout=10).count >= 1
        renamed = vaults.UpdateVault(vp.UpdateVaultRequest(vault_id=vault.vault_id, name="e2e-renamed"),
                                     metadata=md, timeout=10).vault
        assert renamed.name == "e2e-renamed"
        with pytest.raises(grpc.RpcError) as bad:
            vaults.CreateVault(vp.CreateVaultRequest(name="bad name", object_type=cp.OBJECT_TYPE_DISK,
                                                     protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10),
                               metadata=md, timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert cbr_code_of(bad.value) == "BackupService.6401"
        with pytest.raises(grpc.RpcError) as unauth:
            vaults.ListVaults(vp.ListVaultsRequest(), timeout=10)
        assert unauth.value.code() == grpc.StatusCode.UNAUTHENTICATED
        vaults.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id), metadata=md, timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                vaults.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id), metadata=md, timeout=5)
            except grpc.RpcError as gone:
                assert gone.code() == grpc.StatusCode.NOT_FOUND
                break
            assert time.monotonic() < deadline, "vault still there 20 s after DeleteVault"
            time.sleep(0.2)

    # A second `up` says so and changes nothing.
    pids = recorded_pids(run_dir)
    assert len(pids) >= 6 and all(is_alive(pid) for pid in pids)
    env_before = (run_dir / "cbr.env").read_text()
    again = devstack("up", run_dir)
    assert again.returncode == 0 and "already running" in again.stdout
    assert recorded_pids(run_dir) == pids and (run_dir / "cbr.env").read_text() == env_before

    down = devstack("down", run_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 30
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if is_alive(pid)]


def metadata(env: dict[str, str]) -> tuple:
    return (("authorization", f"Bearer {env['CBR_TOKEN']}"),)


def create_vault(env: dict[str, str], name: str) -> None:
    with grpc.insecure_channel(env["CBR_VAULT_ADDR"]) as channel:
        vault_pb2_grpc.VaultServiceStub(channel).CreateVault(vp.CreateVaultRequest(
            name=name, object_type=cp.OBJECT_TYPE_DISK, protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10),
            metadata=metadata(env), timeout=10)


def vault_names(env: dict[str, str]) -> set[str]:
    with grpc.insecure_channel(env["CBR_VAULT_ADDR"]) as channel:
        reply = vault_pb2_grpc.VaultServiceStub(channel).ListVaults(vp.ListVaultsRequest(), metadata=metadata(env),
                                                                    timeout=10)
    return {vault.name for vault in reply.vaults}


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if is_alive(pid)]


def test_restarts_keep_endpoints_and_data_until_wipe(run_dir):
    env_file = run_dir / "cbr.env"
    try:
        first = devstack("up", run_dir)
        assert first.returncode == 0, first.stdout + first.stderr
        first_env_file = env_file.read_bytes()
        kek = (run_dir / "kek").read_bytes()  # the KEK: made once, private to its owner
        assert len(kek) == 32 and (run_dir / "kek").stat().st_mode & 0o777 == 0o600
        env = read_env(env_file)
        create_vault(env, "kept")

        running = devstack("status", run_dir)
        assert running.returncode == 0 and "CBR is running" in running.stdout, running.stdout
        refused = devstack("wipe", run_dir)
        assert refused.returncode == 1 and "stop it first" in refused.stderr
        # The stop hint, run exactly as printed.
        pids = recorded_pids(run_dir)
        hint = running.stdout.strip().rsplit("Stop it with: ", 1)[1]
        stopped = subprocess.run(hint, shell=True, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, f"{hint}\n{stopped.stdout}{stopped.stderr}"
        wait_gone(pids)
        not_running = devstack("status", run_dir)
        assert not_running.returncode == 3 and "CBR is not running" in not_running.stdout
        assert env_file.read_bytes() == first_env_file

        # Same ports, secret and token after a restart, so a shell that sourced cbr.env goes on; the data is there.
        again = devstack("up", run_dir)
        assert again.returncode == 0, again.stdout + again.stderr
        assert env_file.read_bytes() == first_env_file and (run_dir / "kek").read_bytes() == kek
        assert "kept" in vault_names(env)

        # One process gone: partly running, non-zero.
        worker = json.loads((run_dir / "processes.json").read_text())["processes"][-1]
        assert worker["name"] == "worker"
        os.kill(worker["pid"], signal.SIGKILL)
        wait_gone([worker["pid"]])
        partly = devstack("status", run_dir)
        assert partly.returncode == 1 and "not running: worker" in partly.stdout, partly.stdout
        partly_down = devstack("down", run_dir)
        assert partly_down.returncode == 0, partly_down.stdout + partly_down.stderr

        # Another program on one of the stack's ports: `up` names it and starts nothing; --new-ports moves the stack.
        vault_port = int(env["CBR_VAULT_ADDR"].rsplit(":", 1)[1])
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", vault_port))
            squatter.listen()
            blocked = devstack("up", run_dir)
            assert blocked.returncode == 1
            assert f"port {vault_port} (vault)" in blocked.stderr and "up --run-dir" in blocked.stderr
            assert "--new-ports" in blocked.stderr
            assert devstack("status", run_dir).returncode == 3
            moved = devstack("up", run_dir, "--new-ports")
            assert moved.returncode == 0, moved.stdout + moved.stderr
        moved_env = read_env(env_file)
        assert moved_env["CBR_VAULT_ADDR"] != env["CBR_VAULT_ADDR"] and moved_env["CBR_TOKEN"] == env["CBR_TOKEN"]
        assert "kept" in vault_names(moved_env)
        assert devstack("down", run_dir).returncode == 0

        # Only wipe forgets: a fresh secret (the old token is refused) and no vaults.
        wiped = devstack("wipe", run_dir)
        assert wiped.returncode == 0, wiped.stdout + wiped.stderr
        assert not [name for name in ("cbr.env", "stack.json", "pg", "nats", "store", "pool", "kek")
                    if (run_dir / name).exists()]
        fresh = devstack("up", run_dir)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        fresh_env = read_env(env_file)
        assert vault_names(fresh_env) == set()
        with pytest.raises(grpc.RpcError) as old_token:
            vault_names({**fresh_env, "CBR_TOKEN": env["CBR_TOKEN"]})
        assert old_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        down = devstack("down", run_dir)
    assert down.returncode == 0, down.stdout + down.stderr


def test_each_process_serves_metrics_at_its_cbr_env_address(stack):
    from tests.support.metrics import Scrape  # noqa: PLC0415 - prometheus_client only where it is needed

    env = read_env(stack / "cbr.env")
    create_vault(env, "scraped")
    scraped = {}
    for name in ("VAULT", "BACKUP", "POLICY", "REPLICATION", "WORKER"):
        deadline = time.monotonic() + 30  # `up` waits for the services' health, not for the worker's start
        while name not in scraped:
            try:
                with urllib.request.urlopen(f"http://{env[f'CBR_{name}_METRICS_ADDR']}/metrics", timeout=10) as reply:
                    scraped[name] = Scrape(reply.read().decode())
                if not scraped[name].has("cbr_store_free_bytes" if name == "WORKER" else "cbr_outbox_backlog"):
                    raise ConnectionRefusedError("its first sample is not in yet")  # sampled at start
            except OSError:
                scraped.pop(name, None)
                assert time.monotonic() < deadline, f"no /metrics of {name} after 30 s"
                time.sleep(0.2)
    assert scraped["VAULT"].value("cbr_rpc_calls_total", service="cbr.vault.v1.VaultService", method="CreateVault",
                                  code="OK") == 1
    assert scraped["WORKER"].value("cbr_store_free_bytes", path=str(stack / "store")) > 0
    for name in ("VAULT", "BACKUP", "POLICY", "REPLICATION"):  # each its own outbox
        assert scraped[name].value("cbr_outbox_backlog", schema=name.lower()) >= 0
        assert [s.labels["schema"] for s in scraped[name].samples if s.name == "cbr_outbox_backlog"] == [name.lower()]
