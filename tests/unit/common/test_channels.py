"""Which calls go to which replicas and which are tried again (cbr_common.channels), without a network."""
from __future__ import annotations

import json
import socket

import pytest

from cbr_common import channels


def test_one_address_is_passed_to_grpc_as_it_is():
    assert channels.target("vault:7001") == ("vault:7001", None)
    assert channels.target(" dns:///vault:7001 ") == ("dns:///vault:7001", None)
    assert channels.target("ipv4:10.0.0.1:1,10.0.0.2:1") == ("ipv4:10.0.0.1:1,10.0.0.2:1", None)


def test_several_ip_addresses_become_one_static_target():
    assert channels.target("127.0.0.1:7001, 127.0.0.1:7002") == ("ipv4:127.0.0.1:7001,127.0.0.1:7002",
                                                                 "127.0.0.1:7001")
    assert channels.target("[::1]:7001,[::1]:7002") == ("ipv6:[::1]:7001,[::1]:7002", "[::1]:7001")


def test_several_host_names_are_resolved_and_tls_checks_the_first_name():
    table = {"vault-a": ["10.0.0.1"], "vault-b": ["10.0.0.2", "10.0.0.3"]}

    def resolve(host, port, family, kind):
        assert family == socket.AF_INET
        return [(family, kind, 6, "", (ip, port)) for ip in table[host]]

    assert channels.target("vault-a:7001,vault-b:7001", resolve=resolve) == (
        "ipv4:10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001", "vault-a:7001")


@pytest.mark.parametrize("bad", ["", "127.0.0.1:1,nonsense", "[::1]:1,127.0.0.1:2", "127.0.0.1:1,host:port"])
def test_an_address_list_that_names_no_replica_is_refused(bad):
    with pytest.raises(channels.AddressError):
        channels.target(bad, resolve=lambda *a: [])


def test_reads_are_retried_by_grpc_and_request_id_writes_by_the_interceptor():
    reads, keyed = channels.retry_classes()
    assert "GetVault" in reads["cbr.vault.v1.VaultService"]
    assert "WatchTask" in reads["cbr.backup.v1.TaskService"]
    assert "CreateVault" not in reads["cbr.vault.v1.VaultService"]
    assert keyed == {"/cbr.backup.v1.BackupService/CreateCheckpoint",
                     "/cbr.replication.v1.ReplicationService/ReplicateBackup",
                     "/cbr.replication.v1.ReplicationService/ReplicateCheckpoint"}
    config = json.loads(channels.service_config(reads))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method_config,) = config["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert ("cbr.backup.v1.BackupService", "GetBackup") in names
    assert ("cbr.backup.v1.BackupService", "DeleteBackup") not in names
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
