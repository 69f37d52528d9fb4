"""A streaming-replication standby beside a PostgresCluster, and the connection string that follows the writable one.

The standby is a copy of the primary made with pg_basebackup -R (a replication user and a physical slot on the
primary, so the primary keeps the WAL the standby has not received yet). Once it streams, the primary commits
synchronously: it answers COMMIT only when the standby has the commit record, so whatever a caller was told is
committed survives the primary's loss and the standby's promotion. The standby's own command line clears that
setting (which pg_basebackup copies with postgresql.auto.conf): promoted, it must not wait for a standby of its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
from psycopg import sql

from cbr_devstack.ports import HOST
from cbr_devstack.postgres import DATABASE, SUPERUSER, PostgresCluster
from cbr_devstack.processes import ServerError, wait_until

STANDBY_PORT = "postgres-standby"  # the embedded stack's name for it: its key in stack.json and processes.json
STANDBY_SWITCH = "CBR_PG_STANDBY"  # =1 at an `up`: the stack gets a standby (and keeps it until `wipe`)
REPLICATION_USER = "cbr_replicator"
SLOT = "cbr_standby"
STANDBY_NAME = "cbr_standby"  # its cluster_name: the walreceiver's application_name, which the primary waits for
HBA_LINE = f"host replication {REPLICATION_USER} {HOST}/32 trust"


def standby_settings() -> tuple[str, ...]:
    # On the command line, so they win over the postgresql.auto.conf copied from the primary.
    return (f"cluster_name={STANDBY_NAME}", "hot_standby=on", "synchronous_standby_names=")


def wanted(env=None) -> bool:
    value = (os.environ if env is None else env).get(STANDBY_SWITCH, "").strip().lower()
    return value in ("1", "true", "yes", "on")


def multi_host_url(*clusters: PostgresCluster, dbname: str = DATABASE) -> str:
    """A SQLAlchemy URL (libpq reads it too, once the +psycopg is dropped) naming every node: a connection tries
    them in order and keeps the first that takes writes, so the services follow a promotion by reconnecting."""
    hosts = ",".join(HOST for _ in clusters)
    ports = ",".join(str(cluster.port) for cluster in clusters)
    return (f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={hosts}&port={ports}"
            f"&target_session_attrs=read-write")


def prepare_primary(primary: PostgresCluster) -> None:
    """The replication user, the slot and the pg_hba line a standby copies with and streams from; idempotent."""
    hba = primary.data_dir / "pg_hba.conf"
    if HBA_LINE not in hba.read_text().splitlines():
        with open(hba, "a") as file:
            file.write(f"\n# a streaming-replication standby (cbr_devstack.pg_standby)\n{HBA_LINE}\n")
    try:
        with psycopg.connect(primary.conninfo("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET synchronous_commit = local")  # the standby this prepares for is not there to wait for
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_USER,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN").format(sql.Identifier(REPLICATION_USER)))
            if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone() is None:
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (SLOT,))
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise ServerError(f"could not prepare {primary.data_dir} for a standby: {exc}") from exc


def commit_synchronously(primary: PostgresCluster, synchronous: bool = True) -> None:
    """From now on a commit on the primary waits until the standby has it (ALTER SYSTEM: kept across restarts).
    Called once the standby streams: before that, every write would wait for it. With the standby down, commits
    wait for it (the statement timeout does not end that wait: the services' client-side budget does, and the call
    answers UNAVAILABLE); the waiting transactions complete when the standby is back, or when this is turned off."""
    value = STANDBY_NAME if synchronous else ""
    try:
        with psycopg.connect(primary.conninfo("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        raise ServerError(f"could not set synchronous commit on port {primary.port}: {exc}") from exc


class StandbyCluster(PostgresCluster):
    """A hot standby of `primary`: its first start copies the primary's data (pg_basebackup -R), later starts
    resume streaming from the slot. `promote()` makes it take writes."""

    def __init__(self, data_dir: Path, primary: PostgresCluster | None, port: int | None = None, **kwargs):
        super().__init__(data_dir, port, settings=standby_settings(), **kwargs)
        self.primary = primary

    def _create(self, timeout: float) -> None:
        prepare_primary(self.primary)
        argv = [str(self._bin("pg_basebackup")), "-h", HOST, "-p", str(self.primary.port), "-U", REPLICATION_USER,
                "-D", str(self.data_dir), "-R", "-S", SLOT, "-X", "stream", "-c", "fast", "-w"]
        self._run(argv + (["--no-sync"] if self.fast else []), timeout)

    @property
    def is_standby(self) -> bool:
        """Whether the data folder is still a standby's (a promoted one loses its standby.signal)."""
        return (self.data_dir / "standby.signal").exists()

    def promote(self, timeout: float = 60.0) -> None:
        """pg_ctl promote: the standby stops replaying, leaves recovery and takes writes."""
        self._run([str(self._bin("pg_ctl")), "promote", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir)],
                  timeout + 10)

    def wait_streaming(self, timeout: float = 60.0, synchronous: bool = False) -> None:
        """Until the primary reports this standby streaming (and, if asked, synchronous: commits wait for it)."""
        def streaming() -> bool:
            try:
                with psycopg.connect(self.primary.conninfo("postgres"), autocommit=True, connect_timeout=5) as conn:
                    row = conn.execute("SELECT state, sync_state FROM pg_stat_replication "
                                       "WHERE application_name = %s", (STANDBY_NAME,)).fetchone()
            except psycopg.Error:
                return False
            return row is not None and row[0] == "streaming" and (not synchronous or row[1] == "sync")

        if not wait_until(streaming, timeout):
            raise ServerError(f"the standby {self.data_dir} did not start streaming from port {self.primary.port} "
                              f"within {timeout:.0f}s")


def start_synchronous(standby: StandbyCluster, on_started=lambda: None, timeout: float = 60.0) -> None:
    """Starts the standby (copying the primary on its first start), calls on_started (record its pid), waits until
    it streams, then makes the primary commit synchronously."""
    standby.start(timeout)
    on_started()
    standby.wait_streaming(timeout)
    commit_synchronously(standby.primary)
    standby.wait_streaming(timeout, synchronous=True)


def take_over_promoted(primary: PostgresCluster, standby: StandbyCluster) -> Path | None:
    """After a failover (the standby's folder no longer a standby's), makes the promoted copy the primary: the old
    primary's folder is kept aside (returned), and the next start copies a new standby from the promoted one.
    None when there was nothing to do. Both must be stopped."""
    primary_dir, standby_dir = primary.data_dir, standby.data_dir
    if not (standby_dir / "PG_VERSION").exists() or standby.is_standby:
        return None
    if primary.is_running() or standby.is_running():
        raise ServerError(f"{primary_dir} and {standby_dir} must be stopped before the promoted one takes over")
    kept = primary_dir.with_name(f"{primary_dir.name}-before-failover-{time.strftime('%Y%m%dT%H%M%S')}")
    if primary_dir.exists():
        os.rename(primary_dir, kept)
    os.rename(standby_dir, primary_dir)
    # The old primary, perhaps killed, may have left its socket's lock file: it would refuse the new one.
    for lock in primary.socket_dir.glob(".s.PGSQL.*"):
        lock.unlink()
    # The promoted copy still names its old primary; harmless without standby.signal, but misleading.
    auto_conf = primary_dir / "postgresql.auto.conf"
    if auto_conf.exists():
        lines = [line for line in auto_conf.read_text().splitlines()
                 if not line.startswith(("primary_conninfo", "primary_slot_name"))]
        auto_conf.write_text("\n".join(lines) + "\n")
    return kept if kept.exists() else None
