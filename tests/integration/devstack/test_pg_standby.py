"""The embedded stack's standby: copied from the primary, streaming synchronously, found by the multi-host URL
after a promotion, and made the primary by the next start (a new standby copied from it); CBR_PG_STANDBY keeps a
port for it in stack.json and cbr.env names both nodes, while a stack without it stays exactly as before."""
from __future__ import annotations

import psycopg
import pytest

from cbr_backup.adapters.chunk_index import libpq_url
from cbr_devstack import stack
from cbr_devstack.pg_standby import (STANDBY_PORT, StandbyCluster, commit_synchronously, multi_host_url,
                                     start_synchronous, take_over_promoted)
from cbr_devstack.postgres import PostgresCluster


def _one(url: str, query: str):
    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query).fetchone()


def test_a_promoted_standby_has_every_commit_and_becomes_the_primary_at_the_next_start(server_dir):
    primary = PostgresCluster(server_dir / "pg", fast=True)
    standby = StandbyCluster(server_dir / "pg-standby", primary, fast=True)
    primary.start()
    try:
        start_synchronous(standby)
        url = multi_host_url(primary, standby)
        assert _one(primary.conninfo("postgres"), "SELECT sync_state FROM pg_stat_replication") == ("sync",)
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept SELECT generate_series(1, 100)")
        assert _one(url, "SELECT inet_server_port()") == (primary.port,)
        # Synchronous: what the primary answered is on the standby already (no wait, no replay lag allowed).
        assert _one(standby.conninfo(), "SELECT count(*), pg_is_in_recovery() FROM kept") == (100, True)

        primary.kill()
        with pytest.raises(psycopg.OperationalError):  # the standby does not take writes: no node for the URL
            _one(url, "SELECT 1")
        standby.promote()
        assert not standby.is_standby
        assert _one(url, "SELECT inet_server_port(), count(*) FROM kept") == (standby.port, 100)
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            conn.execute("INSERT INTO kept VALUES (101)")  # promoted, it waits for no standby of its own
        standby.stop()

        # The next start: the promoted copy becomes the primary, the old one is kept aside, a new standby is
        # copied from the promoted one and streams synchronously again.
        kept = take_over_promoted(primary, standby)
        assert kept is not None and (kept / "PG_VERSION").exists()
        assert take_over_promoted(primary, standby) is None
        primary.start()
        start_synchronous(standby)
        assert standby.is_standby
        assert _one(multi_host_url(primary, standby), "SELECT inet_server_port(), count(*) FROM kept") == (
            primary.port, 101)
        assert _one(primary.conninfo("postgres"), "SELECT sync_state FROM pg_stat_replication") == ("sync",)
        commit_synchronously(primary, False)
    finally:
        standby.stop()
        primary.stop()


def test_cbr_pg_standby_keeps_a_port_and_cbr_env_names_both_nodes(tmp_path, monkeypatch):
    plain, layout = stack.RunDir(tmp_path / "plain"), stack.RunDir(tmp_path / "paired")
    plain.root.mkdir()
    layout.root.mkdir()
    monkeypatch.delenv("CBR_PG_STANDBY", raising=False)
    config = stack._config_for_start(plain, new_ports=False)
    assert STANDBY_PORT not in config.ports
    assert plain.database_url(config) == plain.postgres(config.ports["postgres"]).url  # the default, unchanged

    monkeypatch.setenv("CBR_PG_STANDBY", "1")
    config = stack._config_for_start(layout, new_ports=False)
    standby_port = config.ports[STANDBY_PORT]
    assert standby_port not in {port for name, port in config.ports.items() if name != STANDBY_PORT}
    monkeypatch.delenv("CBR_PG_STANDBY")
    assert stack._config_for_start(layout, new_ports=False).ports[STANDBY_PORT] == standby_port  # kept
    stack._write_env_file(layout, config)
    env = dict(line.split("=", 1) for line in layout.env_file.read_text().splitlines() if not line.startswith("#"))
    assert env["CBR_DATABASE_URL"] == (
        f"postgresql+psycopg://postgres@/cbr?host=127.0.0.1,127.0.0.1&port={config.ports['postgres']},"
        f"{standby_port}&target_session_attrs=read-write")
    assert layout.pg_standby_data in layout.wiped
