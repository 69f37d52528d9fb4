"""Replica ports and addresses of the embedded stack (cbr_devstack.replicas)."""
from __future__ import annotations

import itertools

import pytest

from cbr_devstack import replicas

BASE = {"postgres": 1, "nats": 2, "vault": 10, "backup": 11, "policy": 12, "replication": 13, "vault_metrics": 20}


def ports_from(start: int):
    counter = itertools.count(start)
    return lambda taken: next(p for p in counter if p not in taken)


def test_one_replica_leaves_the_ports_and_addresses_as_they_were():
    assert replicas.with_ports(dict(BASE), None, ports_from(100)) == BASE
    assert replicas.with_ports(dict(BASE), 1, ports_from(100)) == BASE
    assert replicas.address_lists(BASE)["vault"] == "127.0.0.1:10"
    assert [name for name, *_ in replicas.listeners(BASE)] == ["vault", "backup", "policy", "replication"]


def test_two_replicas_get_kept_ports_listed_in_the_addresses_and_a_later_start_keeps_them():
    two = replicas.with_ports(dict(BASE), 2, ports_from(100))
    assert {two[f"{s}_2"] for s in ("vault", "backup", "policy", "replication")} == {100, 101, 102, 103}
    assert replicas.address_lists(two)["backup"] == "127.0.0.1:11,127.0.0.1:101"
    assert [name for name, *_ in replicas.listeners(two)][4:] == ["vault-2", "backup-2", "policy-2", "replication-2"]
    assert replicas.with_ports(dict(two), None, ports_from(200)) == two  # unchanged without a new count
    assert replicas.with_ports(dict(two), 1, ports_from(200)) == BASE     # back to one
    assert replicas.is_replica_process("policy-2") and not replicas.is_replica_process("worker")


@pytest.mark.parametrize("raw", ["0", "10", "two", "-1"])
def test_a_bad_count_is_refused(raw):
    with pytest.raises(replicas.ReplicaCountError):
        replicas.requested(None, {"CBR_SERVICE_REPLICAS": raw})
    assert replicas.requested(None, {}) is None and replicas.requested(3, {}) == 3
