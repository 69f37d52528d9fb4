"""deploy/docker-compose.yml's three NATS nodes, run here without a container engine: each node's command line as
the file has it (its addresses moved to 127.0.0.1 and free ports), on this machine's nats-server. They form one
JetStream cluster that takes a stream of three replicas, and the services' CBR_NATS_URL names every node."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import yaml

from cbr_common import jetstream
from cbr_devstack.nats import find_binary
from cbr_devstack.ports import free_ports, wait_for_port
from cbr_devstack.processes import wait_until

COMPOSE = Path(__file__).resolve().parents[3] / "deploy" / "docker-compose.yml"
CLIENT, CLUSTER, MONITOR = 4222, 6222, 8222  # the ports inside the containers


def nats_nodes(compose: dict) -> dict[str, list[str]]:
    return {name: [str(arg) for arg in service["command"]] for name, service in compose["services"].items()
            if name == "nats" or name.startswith("nats-")}


def on_this_machine(argv: list[str], ports: dict[str, dict[int, int]], own: str, store: Path) -> list[str]:
    """The container's arguments with every `<service>:<port>` and 0.0.0.0 moved to 127.0.0.1 and this test's
    ports, the store in a folder here, and the client port (the image's default 4222) given."""
    moved = []
    for arg in argv:
        for name, mapping in ports.items():
            for inside, outside in mapping.items():
                arg = arg.replace(f"//{name}:{inside}", f"//127.0.0.1:{outside}")
        for inside, outside in ports[own].items():
            arg = arg.replace(f"0.0.0.0:{inside}", f"127.0.0.1:{outside}")
        moved.append(arg)
    moved[moved.index("-sd") + 1] = str(store)
    moved[moved.index("-m") + 1] = str(ports[own][MONITOR])
    return [str(find_binary()), "-a", "127.0.0.1", "-p", str(ports[own][CLIENT]), *moved]


def test_the_compose_nats_nodes_form_a_cluster_with_replicated_streams(tmp_path):
    compose = yaml.safe_load(COMPOSE.read_text())
    nodes = nats_nodes(compose)
    assert len(nodes) == 3
    url = compose["x-cbr-env"]["CBR_NATS_URL"]
    assert sorted(jetstream.server_list(url)) == sorted(f"nats://{name}:{CLIENT}" for name in nodes)
    assert compose["x-cbr-env"]["CBR_NATS_REPLICAS"] == "3"
    assert set(nodes) <= set(compose["x-cbr-service"]["depends_on"])
    volumes = [compose["services"][name]["volumes"][0].split(":")[0] for name in nodes]
    assert len(set(volumes)) == 3 and set(volumes) <= set(compose["volumes"])  # a store of its own each

    picked = iter(free_ports(3 * len(nodes)))
    ports = {name: {port: next(picked) for port in (CLIENT, CLUSTER, MONITOR)} for name in nodes}
    processes = []
    try:
        for name, argv in nodes.items():
            log = open(tmp_path / f"{name}.log", "wb")
            processes.append(subprocess.Popen(on_this_machine(argv, ports, name, tmp_path / name), stdout=log,
                                              stderr=subprocess.STDOUT, env=dict(os.environ)))
            log.close()
        for name in nodes:
            assert wait_for_port(ports[name][CLIENT], 30, lambda: all(p.poll() is None for p in processes)), \
                (tmp_path / f"{name}.log").read_text()[-2000:]
        healthy = lambda: all(_healthz(ports[name][MONITOR]) for name in nodes)  # noqa: E731
        assert wait_until(healthy, 60, 0.2), {name: (tmp_path / f"{name}.log").read_text()[-1500:] for name in nodes}
        local_url = ",".join(f"nats://127.0.0.1:{ports[name][CLIENT]}" for name in nodes)
        assert asyncio.run(_replicated_stream(local_url)) == 2  # the leader and two more copies
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait(5)


def _healthz(port: int) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


async def _replicated_stream(url: str) -> int:
    nc, js = await jetstream.connect(url, replicas=3)  # creates CBR_EVENTS with three replicas
    try:
        ack = await js.publish("cbr.composetest.ping", b"x")
        assert ack.stream == jetstream.EVENTS_STREAM.name
        info = await js.stream_info(jetstream.EVENTS_STREAM.name)
        assert info.config.num_replicas == 3
        return len(info.cluster.replicas or ())
    finally:
        await nc.close()
