"""`CBR_NATS_NODES=3 python -m cbr_devstack up`: three clustered nats-server processes, the services on all of them
with streams of three replicas, events flowing; `down` stops every node, and the next `up` starts them again."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from cbr.common.v1 import common_pb2 as cp
from cbr.vault.v1 import vault_pb2 as vp
from cbr.vault.v1 import vault_pb2_grpc
from cbr_common.jetstream import EVENTS_STREAM, server_list
from cbr_devstack.processes import is_alive
from tests.e2e.test_embedded_stack import read_env, recorded_pids


def devstack(command: str, run_dir: Path, nodes: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "CBR_NATS_NODES"}
    if nodes is not None:
        env["CBR_NATS_NODES"] = nodes
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture
def run_dir():
    folder = Path(tempfile.mkdtemp(prefix="cbr-devstack-cluster-"))  # outside pytest's root: see test_embedded_stack
    try:
        yield folder / "run"
    finally:
        devstack("down", folder / "run")
        shutil.rmtree(folder, ignore_errors=True)


async def stream_replicas(url: str) -> tuple[int, int]:
    """The events stream's replica count and its copies beside the leader. A stream without a leader (between
    elections: the services wait for one when they start, but a leader may step down later) lists every node as
    a replica, so this waits for a leader, 30 s at most."""
    import nats
    nc = await nats.connect(server_list(url), connect_timeout=5)
    try:
        deadline = time.monotonic() + 30
        while True:
            info = await nc.jetstream(timeout=5).stream_info(EVENTS_STREAM.name)
            if info.cluster.leader or time.monotonic() > deadline:
                return info.config.num_replicas, len(info.cluster.replicas or ())
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


def test_up_with_three_nats_nodes_and_down_stops_them_all(run_dir):
    up = devstack("up", run_dir, nodes="3")
    assert up.returncode == 0, up.stdout + up.stderr
    env = read_env(run_dir / "cbr.env")
    servers = server_list(env["CBR_NATS_URL"])
    assert len(set(servers)) == 3, env["CBR_NATS_URL"]
    status = devstack("status", run_dir)
    assert status.returncode == 0 and all(f"nats-n{i}" in status.stdout for i in (1, 2, 3)), status.stdout
    assert asyncio.run(stream_replicas(env["CBR_NATS_URL"])) == (3, 2)  # the leader and two more copies

    md = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
    with grpc.insecure_channel(env["CBR_VAULT_ADDR"]) as channel:
        vaults = vault_pb2_grpc.VaultServiceStub(channel)
        vault = vaults.CreateVault(vp.CreateVaultRequest(name="clustered", object_type=cp.OBJECT_TYPE_DISK,
                                                         protect_type=vp.PROTECT_TYPE_BACKUP, size_gb=10),
                                   metadata=md, timeout=10).vault
        # The delete goes through the events (vault -> backup -> vault): it ends only if they flow over the cluster.
        vaults.DeleteVault(vp.DeleteVaultRequest(vault_id=vault.vault_id), metadata=md, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                vaults.GetVault(vp.GetVaultRequest(vault_id=vault.vault_id), metadata=md, timeout=5)
            except grpc.RpcError as gone:
                assert gone.code() == grpc.StatusCode.NOT_FOUND
                break
            assert time.monotonic() < deadline, "vault still there 60 s after DeleteVault"
            time.sleep(0.2)

    pids = recorded_pids(run_dir)
    assert devstack("down", run_dir).returncode == 0
    deadline = time.monotonic() + 30
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if is_alive(pid)]
    # The stack keeps its node count: a later `up` asking for one server is refused before anything starts, and
    # one without the variable starts the three nodes again on their stores and ports.
    single = devstack("up", run_dir, nodes="1")
    assert single.returncode == 1 and "CBR_NATS_NODES=1" in single.stderr, single.stderr
    again = devstack("up", run_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_env(run_dir / "cbr.env")["CBR_NATS_URL"] == env["CBR_NATS_URL"]
    assert asyncio.run(stream_replicas(env["CBR_NATS_URL"])) == (3, 2)
