"""A private NATS cluster on 127.0.0.1: three nats-server processes with JetStream, routed to each other.

Each node has its own store folder and three ports (clients, routes between nodes, monitoring). Clients get every
node's address in one comma-separated CBR_NATS_URL and move to another node when theirs goes; streams are created
with three replicas (CBR_NATS_REPLICAS), so losing one node loses no message and keeps a quorum."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cbr_devstack.nats import NatsServer, find_binary
from cbr_devstack.ports import HOST, free_ports
from cbr_devstack.processes import ServerError

CLUSTER_NAME = "cbr"
NODE_COUNTS = (1, 3)  # CBR_NATS_NODES: one server (the default), or a cluster that survives losing one node
CLUSTER_REPLICAS = 3  # every stream on all three nodes
META_LEADER_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodePorts:
    client: int
    cluster: int
    monitor: int


def nodes_wanted(env: Mapping[str, str], kept: int, made: bool) -> int:
    """The node count of a stack: CBR_NATS_NODES when given (1 or 3), else what the stack was made with. A made
    stack keeps its count: its streams live in the one server's store or in the cluster's."""
    raw = env.get("CBR_NATS_NODES", "").strip()
    if not raw:
        return kept
    if raw not in {str(n) for n in NODE_COUNTS}:
        raise ValueError(f"CBR_NATS_NODES must be {' or '.join(map(str, NODE_COUNTS))}, not {raw!r}")
    wanted = int(raw)
    if made and wanted != kept:
        raise ValueError(f"this stack runs NATS on {kept} node{'s' if kept > 1 else ''}; CBR_NATS_NODES={wanted} "
                         f"needs a new stack")
    return wanted


def node_name(index: int) -> str:
    """Nodes are n1, n2, n3: the names JetStream reports as stream leaders and replicas."""
    return f"n{index + 1}"


def port_names(nodes: int) -> tuple[str, ...]:
    """The ports a stack keeps (stack.json) for a cluster of `nodes`, besides "nats" (node 1's client port)."""
    if nodes <= 1:
        return ()
    return tuple(name for i in range(nodes) for name in
                 ((f"nats_{i + 1}",) if i else ()) + (f"nats_cluster_{i + 1}", f"nats_monitor_{i + 1}"))


def ports_of(ports: dict[str, int], nodes: int) -> list[NodePorts]:
    """Each node's ports from a stack's kept ports (port_names)."""
    return [NodePorts(ports["nats" if i == 0 else f"nats_{i + 1}"], ports[f"nats_cluster_{i + 1}"],
                      ports[f"nats_monitor_{i + 1}"]) for i in range(nodes)]


def servers_url(client_ports: list[int], host: str = HOST) -> str:
    """CBR_NATS_URL naming every node, comma-separated (cbr_common.jetstream.server_list splits it)."""
    return ",".join(f"nats://{host}:{port}" for port in client_ports)


def node_config(index: int, ports: list[NodePorts], store_dir: Path, host: str = HOST) -> str:
    """The configuration file of node `index`: JetStream in its own store, routes to every other node."""
    own = ports[index]
    routes = ", ".join(f'"nats-route://{host}:{other.cluster}"' for i, other in enumerate(ports) if i != index)
    return (f'server_name: "{node_name(index)}"\n'
            f'listen: "{host}:{own.client}"\n'
            f'http: "{host}:{own.monitor}"\n'
            f'jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n}}\n'
            f'cluster {{\n  name: "{CLUSTER_NAME}"\n  listen: "{host}:{own.cluster}"\n  routes: [{routes}]\n}}\n')


class ClusterNode(NatsServer):
    """One node: a NatsServer that runs from its configuration file (written at each start)."""

    def __init__(self, index: int, ports: list[NodePorts], root: Path, log_dir: Path):
        self.index = index
        self.name = node_name(index)
        self.ports = ports[index]
        self._all_ports = ports
        self.config_file = Path(root).absolute() / f"{self.name}.conf"
        super().__init__(Path(root) / self.name, self.ports.client, log_path=Path(log_dir) / f"nats-{self.name}.log")

    def argv(self) -> list[str]:
        self.config_file.write_text(node_config(self.index, self._all_ports, self.store_dir))
        return [str(find_binary()), "-c", str(self.config_file)]

    def jsz(self, timeout: float = 2.0) -> dict:
        """The node's JetStream report from its monitoring port (meta leader, streams, their states)."""
        url = f"http://{HOST}:{self.ports.monitor}/jsz?streams=true"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.load(answer)

    def meta_leader(self) -> str:
        """The node the JetStream meta group follows, as this node sees it; "" when it has none (or is down)."""
        try:
            return (self.jsz().get("meta_cluster") or {}).get("leader", "")
        except (OSError, urllib.error.URLError, ValueError):
            return ""


class NatsCluster:
    """Three nodes under `root`; start() returns once every node runs and JetStream has a meta leader, so that
    replicated streams can be created right away."""

    def __init__(self, root: Path, ports: list[NodePorts] | None = None, *, log_dir: Path | None = None,
                 nodes: int = 3):
        self.root = Path(root).absolute()
        if ports is None:
            picked = free_ports(3 * nodes)
            ports = [NodePorts(*picked[3 * i:3 * i + 3]) for i in range(nodes)]
        logs = Path(log_dir) if log_dir else self.root
        self.nodes = [ClusterNode(i, ports, self.root, logs) for i in range(len(ports))]

    @property
    def url(self) -> str:
        return servers_url([node.port for node in self.nodes])

    @property
    def pids(self) -> list[int | None]:
        return [node.pid for node in self.nodes]

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30.0, on_started: Callable[[ClusterNode], None] | None = None) -> None:
        """on_started: called with each node as soon as it runs (the stack records its pid then)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.start(timeout)
                    if on_started is not None:
                        on_started(node)
            self.wait_meta_leader(META_LEADER_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def wait_meta_leader(self, timeout: float) -> str:
        """Waits until every running node names the same meta leader; bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = {node.meta_leader() for node in self.nodes if node.is_running()}
            if len(leaders) == 1 and "" not in leaders:
                return leaders.pop()
            if time.monotonic() > deadline:
                raise ServerError(f"the NATS cluster has no JetStream meta leader after {timeout:.0f}s "
                                  f"(nodes see {sorted(leaders)}); logs: {self.nodes[0].log_path.parent}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def for_stack(root: Path, ports: dict[str, int], nodes: int, log_dir: Path) -> NatsCluster:
    """The cluster of an embedded stack, on the ports it keeps in stack.json (port_names)."""
    return NatsCluster(root, ports_of(ports, nodes), log_dir=log_dir)
