"""The embedded Postgres and NATS servers: start, connect, fail, and come back on the same port and data."""

from __future__ import annotations

import asyncio
import json
import socket

import nats
import psycopg
import pytest

from cbr_devstack.nats import NatsServer
from cbr_devstack.postgres import PostgresCluster


@pytest.fixture
def postgres(server_dir):
    cluster = PostgresCluster(server_dir / "pg", fast=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nats_server(server_dir):
    server = NatsServer(server_dir / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def read_info(port: int, timeout: float = 2.0) -> dict:
    """The INFO line a NATS server sends first to every client."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return parse_info(sock.makefile("rb").readline())


def parse_info(line: bytes) -> dict:
    assert line.startswith(b"INFO "), line
    return json.loads(line[len(b"INFO "):])


def test_postgres_serves_the_cbr_database_on_its_own_port(postgres):
    assert postgres.port != 5432
    assert postgres.url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres.port}/cbr"
    with psycopg.connect(postgres.conninfo(), connect_timeout=5) as conn:
        assert conn.execute("select 1, current_database()").fetchone() == (1, "cbr")
        assert conn.execute("show fsync").fetchone() == ("off",)
    assert postgres.is_running() and postgres.pid > 0


def test_killed_postgres_is_down_and_restarts_with_its_data(postgres):
    with psycopg.connect(postgres.conninfo(), connect_timeout=5) as conn:
        conn.execute("create table survivor (id int)")
        conn.execute("insert into survivor values (7)")

    postgres.kill()

    assert not postgres.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.conninfo(), connect_timeout=2).close()
    postgres.start()  # crash recovery replays the committed insert
    with psycopg.connect(postgres.conninfo(), connect_timeout=5) as conn:
        assert conn.execute("select id from survivor").fetchall() == [(7,)]


def test_nats_answers_with_jetstream_on_its_own_port(nats_server):
    assert nats_server.port != 4222
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    info = read_info(nats_server.port)
    assert info["port"] == nats_server.port
    assert info.get("jetstream") is True


def test_paused_nats_answers_nothing_until_resumed(nats_server):
    nats_server.pause()
    try:
        with socket.create_connection(("127.0.0.1", nats_server.port), timeout=0.5) as sock:
            with pytest.raises(socket.timeout):
                sock.recv(1)  # the kernel accepted the connection, but the stopped server sends no INFO
            nats_server.resume()
            sock.settimeout(3.0)
            assert parse_info(sock.makefile("rb").readline())["port"] == nats_server.port
    finally:
        nats_server.resume()


def test_restarted_nats_keeps_port_and_jetstream_data(nats_server):
    async def publish():
        client = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            jetstream = client.jetstream()
            await jetstream.add_stream(name="DEVSTACK", subjects=["devstack.>"])
            await jetstream.publish("devstack.hello", b"kept")
        finally:
            await client.close()

    async def stored_messages() -> int:
        client = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            return (await client.jetstream().stream_info("DEVSTACK")).state.messages
        finally:
            await client.close()

    asyncio.run(publish())
    first_pid = nats_server.pid
    nats_server.stop()
    assert not nats_server.is_running()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", nats_server.port), timeout=0.5).close()

    nats_server.start()

    assert nats_server.pid != first_pid
    assert asyncio.run(stored_messages()) == 1


def test_killed_nats_is_down(nats_server):
    nats_server.kill()
    assert not nats_server.is_running()
    with pytest.raises(OSError):
        read_info(nats_server.port, timeout=0.5)
