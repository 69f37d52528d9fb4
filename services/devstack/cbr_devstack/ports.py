"""Local TCP ports: picking a free one (for now or to keep), and waiting for a listener on it."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Collection
from pathlib import Path

HOST = "127.0.0.1"
KEPT_PORTS = range(20000, 65536)  # where ports that a stack keeps across restarts are chosen
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PICK_ATTEMPTS = 200


def free_port() -> int:
    """A port nothing listens on right now; the kernel picks it from the ephemeral range."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """count distinct ports nothing listens on right now. All are held bound until the last is picked: ports
    picked one at a time, each released before the next, can repeat (a NATS node of a three-node test once got
    its router port twice)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether a server could not listen on the port now: something listens there or holds it bound.
    SO_REUSEADDR as servers set it, so connections of an earlier server that linger in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def kept_port(taken: Collection[int] = ()) -> int:
    """A free port to keep across restarts, outside the kernel's ephemeral range: there neither free_port() of
    another program nor an outgoing connection lands on it while the stack is down."""
    low, high = ephemeral_range()
    candidates = [port for port in KEPT_PORTS if not low <= port <= high and port not in taken]
    for port in random.sample(candidates, min(PICK_ATTEMPTS, len(candidates))):
        if not port_in_use(port):
            return port
    while (port := free_port()) in taken:  # every port outside the range is busy: take the kernel's choice
        pass
    return port


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = EPHEMERAL_RANGE.read_text().split()
    except (FileNotFoundError, ValueError):
        return 32768, 60999  # Linux's default
    return int(low), int(high)


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool], host: str = HOST) -> bool:
    """True once the port accepts connections; False on timeout or as soon as `alive()` says the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False
