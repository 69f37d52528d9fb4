"""Local ports (cbr_devstack.ports)."""
import socket

from cbr_devstack.ports import HOST, free_port, free_ports


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(50)
    assert len(set(ports)) == 50
    for port in ports[:5] + [free_port()]:
        with socket.socket() as sock:
            sock.bind((HOST, port))  # nothing holds it any more
