"""The NATS cluster's pure parts: the server list, each node's configuration, the ports a stack keeps for it, the
CBR_NATS_NODES and CBR_NATS_REPLICAS settings."""
from __future__ import annotations

from pathlib import Path

import pytest

from cbr_common.jetstream import server_list
from cbr_common.settings import Settings, SettingsError
from cbr_devstack import nats_cluster, stack
from cbr_devstack.nats_cluster import NodePorts, node_config, nodes_wanted, port_names, ports_of, servers_url

PORTS = [NodePorts(4001, 6001, 8001), NodePorts(4002, 6002, 8002), NodePorts(4003, 6003, 8003)]


def test_the_url_names_every_node_and_splits_back_into_them():
    url = servers_url([4001, 4002, 4003])
    assert url == "nats://127.0.0.1:4001,nats://127.0.0.1:4002,nats://127.0.0.1:4003"
    assert server_list(url) == ["nats://127.0.0.1:4001", "nats://127.0.0.1:4002", "nats://127.0.0.1:4003"]
    assert server_list(" nats://a:4222 , nats://b:4222,") == ["nats://a:4222", "nats://b:4222"]
    assert server_list("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]  # one server, as before
    with pytest.raises(ValueError):
        server_list(" , ")


def test_a_nodes_config_has_its_own_ports_and_store_and_routes_to_the_others_only():
    text = node_config(1, PORTS, Path('/run/n2 "odd"'))
    assert 'server_name: "n2"' in text
    assert 'listen: "127.0.0.1:4002"' in text and 'http: "127.0.0.1:8002"' in text
    assert 'store_dir: "/run/n2 \\"odd\\""' in text  # quoted, so any folder name reads back as itself
    assert 'name: "cbr"' in text and 'listen: "127.0.0.1:6002"' in text
    routes = text.split("routes: [", 1)[1].split("]", 1)[0]
    assert routes == '"nats-route://127.0.0.1:6001", "nats-route://127.0.0.1:6003"'


def test_the_kept_port_names_map_back_to_each_nodes_ports():
    assert port_names(1) == ()
    names = port_names(3)
    assert "nats" not in names and len(set(names)) == len(names) == 8  # node 1's client port stays "nats"
    kept = {"nats": 4001, **{name: 5000 + i for i, name in enumerate(names)}}
    nodes = ports_of(kept, 3)
    assert [node.client for node in nodes] == [4001, kept["nats_2"], kept["nats_3"]]
    assert len({port for node in nodes for port in (node.client, node.cluster, node.monitor)}) == 9


@pytest.mark.parametrize("env, kept, made, wanted", [
    ({}, 1, False, 1), ({}, 3, True, 3), ({"CBR_NATS_NODES": "3"}, 1, False, 3),
    ({"CBR_NATS_NODES": " 1 "}, 1, True, 1), ({"CBR_NATS_NODES": ""}, 3, True, 3)])
def test_the_node_count_is_chosen_at_the_first_start_and_kept(env, kept, made, wanted):
    assert nodes_wanted(env, kept, made) == wanted


@pytest.mark.parametrize("env, kept, made, words", [
    ({"CBR_NATS_NODES": "2"}, 1, False, "must be 1 or 3"), ({"CBR_NATS_NODES": "three"}, 1, False, "must be 1 or 3"),
    ({"CBR_NATS_NODES": "3"}, 1, True, "runs NATS on 1 node;"), ({"CBR_NATS_NODES": "1"}, 3, True, "on 3 nodes")])
def test_a_bad_or_changed_node_count_is_refused(env, kept, made, words):
    with pytest.raises(ValueError, match=words):
        nodes_wanted(env, kept, made)


def test_a_cluster_stack_keeps_every_nodes_ports_and_hands_out_all_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("CBR_NATS_NODES", "3")
    layout = stack.RunDir(tmp_path)
    config = stack._config_for_start(layout, new_ports=False)
    assert config.nats_nodes == 3 and set(port_names(3)) <= set(config.ports)
    assert len(set(config.ports.values())) == len(config.ports)
    stack._write_env_file(layout, config)
    env = dict(line.split("=", 1) for line in layout.env_file.read_text().splitlines() if not line.startswith("#"))
    assert server_list(env["CBR_NATS_URL"]) == [f"nats://127.0.0.1:{node.client}"
                                                for node in ports_of(config.ports, 3)]
    monkeypatch.delenv("CBR_NATS_NODES")
    assert stack._config_for_start(layout, new_ports=False) == config  # kept without the variable
    monkeypatch.setenv("CBR_NATS_NODES", "1")
    with pytest.raises(stack.ProviderChangeError, match="wipe"):
        stack._config_for_start(layout, new_ports=False)


def test_a_single_server_stack_is_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("CBR_NATS_NODES", raising=False)
    layout = stack.RunDir(tmp_path)
    config = stack._config_for_start(layout, new_ports=False)
    assert config.nats_nodes == 1 and list(config.ports) == list(stack.KEPT_PORTS)
    assert layout.nats_url(config) == f"nats://127.0.0.1:{config.ports['nats']}"


def test_replicas_setting():
    env = {"CBR_DATABASE_URL": "postgresql+psycopg://x@h/db", "CBR_NATS_URL": "nats://a:1,nats://b:2",
           "CBR_JWT_SECRET": "s"}
    assert Settings.from_env("vault", env).nats_replicas == 1
    assert Settings.from_env("vault", {**env, "CBR_NATS_REPLICAS": "3"}).nats_replicas == 3
    for bad in ("0", "6"):
        with pytest.raises(SettingsError, match="CBR_NATS_REPLICAS"):
            Settings.from_env("vault", {**env, "CBR_NATS_REPLICAS": bad})
    assert nats_cluster.CLUSTER_REPLICAS == 3
