"""`python -m cbr_devstack up-regions` (what `make up-regions` runs): two full stacks side by side, each its own
region with its own ports and data, each naming the other as its peer; `--region` is kept by the run folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from cbr.replication.v1 import replication_pb2, replication_pb2_grpc
from cbr_devstack import stack
from cbr_devstack.processes import is_alive
from cbr_devstack.state import load_config


def devstack(command: str, run_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbr_devstack", command, "--run-dir", str(run_dir), *options],
                          capture_output=True, text=True, timeout=600)


def env_of(run_dir: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (run_dir / "cbr.env").read_text().splitlines()
             if line and not line.startswith("#"))
    return dict(pairs)


def pids(run_dir: Path) -> list[int]:
    path = run_dir / "processes.json"
    return [record["pid"] for record in json.loads(path.read_text())["processes"]] if path.exists() else []


def capabilities(run_dir: Path) -> list[tuple[str, list[str]]]:
    env = env_of(run_dir)
    with grpc.insecure_channel(env["CBR_REPLICATION_ADDR"]) as channel:
        answer = replication_pb2_grpc.ReplicationServiceStub(channel).GetReplicationCapabilities(
            replication_pb2.GetReplicationCapabilitiesRequest(),
            metadata=(("authorization", f"Bearer {env['CBR_TOKEN']}"),), timeout=30)
    return [(region.name, list(region.replication_destinations)) for region in answer.regions]


def test_two_regions_run_side_by_side_as_each_others_peers(server_dir):
    root = server_dir / "regions"
    a, b = root / "region-a", root / "region-b"
    try:
        up = devstack("up-regions", root)
        assert up.returncode == 0, up.stdout + up.stderr
        configs = {name: load_config(folder / "stack.json") for name, folder in (("a", a), ("b", b))}
        assert (configs["a"].region, configs["b"].region) == ("region-a", "region-b")
        assert not set(configs["a"].ports.values()) & set(configs["b"].ports.values())
        assert configs["a"].jwt_secret != configs["b"].jwt_secret
        for folder in (a, b):  # data of each region under its own folder
            assert stack.RunDir(folder).pg_data.is_dir() and stack.RunDir(folder).store.is_dir()
        assert not set(pids(a)) & set(pids(b)) and all(is_alive(pid) for pid in pids(a) + pids(b))

        assert capabilities(a) == [("region-a", ["region-b"])]
        assert capabilities(b) == [("region-b", ["region-a"])]
        peer_of_a = json.loads((a / "regions.json").read_text())["peers"]
        assert [(p["name"], p["transfer_addr"]) for p in peer_of_a] == [
            ("region-b", env_of(b)["CBR_BACKUP_ADDR"])]  # the peer's backup service serves the transfer

        again = devstack("up-regions", root)  # already running: nothing changes
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
    finally:
        down = devstack("down-regions", root)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(is_alive(pid) for pid in pids(a) + pids(b))


def test_a_run_folder_keeps_its_region(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    layout = stack.RunDir(run_dir)
    assert stack._config_for_start(layout, False, "region-b").region == "region-b"
    assert stack._config_for_start(layout, False).region == "region-b"  # no --region: the kept one
    with pytest.raises(stack.ProviderChangeError, match="this stack is region 'region-b'"):
        stack._config_for_start(layout, False, "region-c")
    assert stack._config_for_start(stack.RunDir(_fresh(tmp_path)), False).region == "local"


def _fresh(tmp_path: Path) -> Path:
    folder = tmp_path / "fresh"
    folder.mkdir()
    return folder


def test_a_bad_region_name_is_refused_before_anything_starts(tmp_path):
    refused = devstack("up", tmp_path / "run", "--region", "Region_A")
    assert refused.returncode == 2 and "not a region name" in refused.stderr
    assert not (tmp_path / "run" / "stack.json").exists()


def test_up_with_region_runs_a_second_stack_beside_the_first(server_dir):
    first, second = server_dir / "first", server_dir / "second"
    try:
        for options, folder in (((), first), (("--region", "region-b"), second)):
            started = devstack("up", folder, *options)
            assert started.returncode == 0, started.stdout + started.stderr
        assert "CBR region region-b is up" in started.stdout
        ports = [set(load_config(folder / "stack.json").ports.values()) for folder in (first, second)]
        assert not ports[0] & ports[1]
        assert stack.RunDir(first).pg_data != stack.RunDir(second).pg_data
        assert all(is_alive(pid) for pid in pids(first) + pids(second))
        assert capabilities(first) == [("local", [])]  # no directory: no peers
        assert capabilities(second) == [("region-b", [])]
        kept = devstack("up", second, "--region", "region-c")  # a run folder's region does not change
        assert kept.returncode == 1 and "running as region 'region-b', not 'region-c'" in kept.stderr
        assert devstack("up", second, "--region", "region-b").returncode == 0  # the same region: already running
    finally:
        downs = [devstack("down", folder) for folder in (first, second)]
    assert all(done.returncode == 0 for done in downs), [done.stderr for done in downs]
    assert not any(is_alive(pid) for pid in pids(first) + pids(second))
    changed = devstack("up", second, "--region", "region-c")
    assert changed.returncode == 1 and "this stack is region 'region-b'" in changed.stderr
    assert not any(is_alive(pid) for pid in pids(second))


@pytest.mark.parametrize("names, words", [("region-a", "at least two different regions"),
                                          ("region-a,region-a", "at least two different regions"),
                                          ("region-a,B", "'B' is not a region name")])
def test_up_regions_refuses_bad_names_before_anything_starts(tmp_path, names, words):
    refused = devstack("up-regions", tmp_path / "regions", "--names", names)
    assert refused.returncode == 2 and words in refused.stderr
    assert not (tmp_path / "regions").exists()
