"""Several processes of each service (`up --replicas N` or CBR_SERVICE_REPLICAS=N): replica 1 keeps the
service's own port and name; replica i > 1 is the process "<service>-<i>" on the port kept in stack.json as
"<service>_<i>". CBR_<SERVICE>_ADDR lists every replica, comma-separated, and clients balance over them
(cbr_common.channels). The count a stack last started with is the ports stack.json keeps, so a later `up` without
the setting starts as many again."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping

from cbr_devstack.ports import HOST
from cbr_devstack.services import SERVICES

REPLICAS_ENV = "CBR_SERVICE_REPLICAS"
MAX_REPLICAS = 9
_REPLICA_PORT = re.compile(r"^(?P<service>[a-z]+)_(?P<index>[2-9])$")
_REPLICA_NAME = re.compile(r"^(?P<service>[a-z]+)-(?P<index>[2-9])$")


class ReplicaCountError(ValueError):
    pass


def requested(flag: int | None, env: Mapping[str, str] | None = None) -> int | None:
    """The count asked for: the flag, else CBR_SERVICE_REPLICAS, else None (keep the stack's)."""
    raw = str(flag) if flag is not None else (os.environ if env is None else env).get(REPLICAS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPLICAS:
        raise ReplicaCountError(f"{REPLICAS_ENV} (or --replicas) must be 1 to {MAX_REPLICAS}, not {raw!r}")
    return int(raw)


def is_replica_port(name: str) -> bool:
    match = _REPLICA_PORT.match(name)
    return match is not None and match["service"] in SERVICES


def is_replica_process(name: str) -> bool:
    match = _REPLICA_NAME.match(name)
    return match is not None and match["service"] in SERVICES


def count(ports: Mapping[str, int]) -> int:
    """Replicas per service the ports provide for (every service has as many)."""
    n = 1
    while all(f"{service}_{n + 1}" in ports for service in SERVICES):
        n += 1
    return n


def with_ports(ports: dict[str, int], wanted: int | None, new_port: Callable[[set[int]], int]) -> dict[str, int]:
    """`ports` with a kept port for each replica beyond the first of `wanted` (None: as many as now), and none
    for replicas beyond it. new_port(taken) chooses a free port not in `taken`."""
    n = count(ports) if wanted is None else wanted
    kept = {name: port for name, port in ports.items()
            if not is_replica_port(name) or int(name.rpartition("_")[2]) <= n}
    for index in range(2, n + 1):
        for service in SERVICES:
            kept.setdefault(f"{service}_{index}", new_port(set(kept.values())))
    return kept


def listeners(ports: Mapping[str, int]) -> list[tuple[str, str, int, int]]:
    """(process name, service, replica index, port) of every service process, replica 1 first."""
    return [(service if index == 1 else f"{service}-{index}", service, index,
             ports[service if index == 1 else f"{service}_{index}"])
            for index in range(1, count(ports) + 1) for service in SERVICES]


def address_lists(ports: Mapping[str, int]) -> dict[str, str]:
    """CBR_<SERVICE>_ADDR of each service: its replicas' addresses, comma-separated (one: as before)."""
    lists: dict[str, list[str]] = {service: [] for service in SERVICES}
    for _, service, _, port in listeners(ports):
        lists[service].append(f"{HOST}:{port}")
    return {service: ",".join(addresses) for service, addresses in lists.items()}


def with_count(config, wanted: int | None, new_port: Callable[[set[int]], int]):
    """The StackConfig with replica ports for `wanted` replicas (None: unchanged)."""
    ports = with_ports(dict(config.ports), wanted, new_port)
    return config if ports == config.ports else dataclasses.replace(config, ports=ports)
