"""Bringing the embedded stack up and down: Postgres, NATS, migrations and the four services in one run folder.

The first `up` chooses the ports and the JWT secret and keeps them in stack.json; every later `up` reuses them and
the data folders, so cbr.env stays valid across `down` and `up` until `wipe` removes it all."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cbr_devstack import pg_standby
from cbr_devstack.health import NotServingError, wait_serving
from cbr_devstack.nats import NatsServer
from cbr_devstack import nats_cluster
from cbr_devstack.pg_standby import STANDBY_PORT, StandbyCluster
from cbr_devstack.ports import HOST, kept_port, port_in_use
from cbr_devstack.postgres import PostgresCluster
from cbr_devstack.processes import ProcessRecord, ServerError, log_tail, stop_processes
from cbr_devstack import replicas
from cbr_devstack.services import METRICS_PORTS, SERVICES, WORKER, service_env, start_service, start_worker
from cbr_devstack.state import (RunningProcesses, StackConfig, load_config, load_running, save_config,
                                save_running)

HEALTH_TIMEOUT = 60.0
MIGRATE_TIMEOUT = 180.0
SERVICE_STOP_TIMEOUT = 10.0
DEV_TOKEN_TTL = 365 * 24 * 3600
DEV_TOKEN_RENEWAL = 7 * 24 * 3600  # an `up` this close to the token's expiry issues a new one
SERVERS = ("postgres", "nats", *SERVICES)  # everything that listens on a port of its own
KEPT_PORTS = (*SERVERS, *METRICS_PORTS.values())  # and the services' and the worker's /metrics

# `status` exit codes, as LSB init scripts use them.
RUNNING, PARTLY_RUNNING, NOT_RUNNING = 0, 1, 3


class MigrationError(RuntimeError):
    pass


class ProviderChangeError(RuntimeError):
    """CBR_PROVIDER asks for another provider than the stack's disks live on, or --region for another region."""


CEPH_BUCKET = "cbr-chunks"
CEPH_DAEMONS = (("rgw", "mgr.x"), ("osd.0",), ("mon.a",))  # stop order: the OSD's clients first, the mon last


@dataclass(frozen=True)
class RunDir:
    """Where everything of one stack lives; all but processes.json survives `down`, nothing but the lock `wipe`."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def processes_file(self) -> Path:
        return self.root / "processes.json"

    @property
    def env_file(self) -> Path:
        return self.root / "cbr.env"

    @property
    def lock_file(self) -> Path:
        return self.root / "stack.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def pg_socket(self) -> Path:
        return self.root / "pg-socket"

    @property
    def pg_standby_data(self) -> Path:
        """The streaming standby's data folder (CBR_PG_STANDBY=1)."""
        return self.root / "pg-standby"

    @property
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def nats_cluster(self) -> Path:
        """The node folders and configuration files of a stack made with CBR_NATS_NODES=3."""
        return self.root / "nats-cluster"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def fs(self) -> Path:
        return self.root / "fs"

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def ceph(self) -> Path:
        """The private Ceph cluster of a stack made with CBR_PROVIDER=ceph."""
        return self.root / "ceph"

    @property
    def kek_file(self) -> Path:
        """The key-encryption key that wraps every vault's keys: made by the first start, removed by wipe
        (losing it loses every vault's backups)."""
        return self.root / "kek"

    @property
    def wiped(self) -> tuple[Path, ...]:
        """What `wipe` removes: every file and folder the stack made here (the folder may hold other things)."""
        return (self.pg_data, self.pg_socket, self.pg_standby_data, self.root / "pg-standby-socket",
                *sorted(self.root.glob("pg-before-failover-*")), self.nats_store, self.nats_cluster, self.pool,
                self.fs, self.store,
                self.logs, self.ceph, self.kek_file, self.config_file, self.processes_file, self.env_file)

    def postgres(self, port: int | None = None) -> PostgresCluster:
        return PostgresCluster(self.pg_data, port, socket_dir=self.pg_socket, log_path=self.logs / "postgres.log")

    def pg_standby(self, primary: PostgresCluster | None, port: int) -> StandbyCluster:
        return StandbyCluster(self.pg_standby_data, primary, port, socket_dir=self.root / "pg-standby-socket",
                              log_path=self.logs / "postgres-standby.log")

    def database_url(self, config: StackConfig) -> str:
        """The services' CBR_DATABASE_URL: the primary's, or with a standby one naming both (the writable wins)."""
        primary = self.postgres(config.ports["postgres"])
        if STANDBY_PORT not in config.ports:
            return primary.url
        return pg_standby.multi_host_url(primary, self.pg_standby(primary, config.ports[STANDBY_PORT]))

    def nats(self, port: int | None = None) -> NatsServer:
        return NatsServer(self.nats_store, port, log_path=self.logs / "nats.log")

    def nats_url(self, config: StackConfig) -> str:
        """CBR_NATS_URL: the one server, or every node of the cluster."""
        if config.nats_nodes > 1:
            return nats_cluster.servers_url([p.client for p in nats_cluster.ports_of(config.ports, config.nats_nodes)])
        return self.nats(config.ports["nats"]).url


def up(run_dir: Path, new_ports: bool = False, region: str | None = None, replica_count: int | None = None) -> int:
    """Starts the stack; `region` names it on its first start (CBR_REGION, default "local") and must match later;
    replica_count: processes per service (None: CBR_SERVICE_REPLICAS, else as many as the last start)."""
    layout = RunDir(Path(run_dir).absolute())
    layout.root.mkdir(parents=True, exist_ok=True)
    with _locked(layout):
        running = load_running(layout.processes_file)
        if running is not None:
            if running.all_running():
                kept = load_config(layout.config_file)
                if region and kept is not None and region != kept.region:
                    print(f"CBR is running as region {kept.region!r}, not {region!r}; a run folder keeps its "
                          f"region (another region needs another --run-dir)", file=sys.stderr)
                    return 1
                if new_ports:
                    print(f"CBR is running; new ports take effect at start. Stop it first with: "
                          f"{command_hint('down', layout.root)}", file=sys.stderr)
                    return 1
                print(f"CBR is already running (see {_shown(layout.env_file)})")
                return 0
            print("Stopping what is left of an earlier run first.")
            if not _stop(layout, running):
                return 1
        try:
            config = _config_for_start(layout, new_ports, region, replica_count=replicas.requested(replica_count))
        except replicas.ReplicaCountError as exc:
            print(f"CBR did not start: {exc}", file=sys.stderr)
            return 1
        except ImportError as exc:
            print(f"CBR did not start: cannot issue a dev token ({exc})", file=sys.stderr)
            return 1
        except ProviderChangeError as exc:
            print(f"CBR did not start: {exc}", file=sys.stderr)
            return 1
        busy = [(name, port) for name, port in config.ports.items() if port_in_use(port)]
        if busy:
            print(_busy_ports_message(layout, busy), file=sys.stderr)
            return 1
        return _bring_up(layout, config)


def down(run_dir: Path) -> int:
    layout = RunDir(Path(run_dir).absolute())
    if not layout.root.is_dir():
        print("CBR is not running")
        return 0
    with _locked(layout):
        load_config(layout.config_file)  # refuses the run folder of an earlier version, whose records it cannot read
        running = load_running(layout.processes_file)
        if running is None or not running.alive():
            layout.processes_file.unlink(missing_ok=True)
            print("CBR is not running")
            return 0
        return 0 if _stop(layout, running) else 1


def status(run_dir: Path) -> int:
    """Prints what runs; RUNNING when all of it does, PARTLY_RUNNING when some, NOT_RUNNING when none."""
    layout = RunDir(Path(run_dir).absolute())
    running = load_running(layout.processes_file)
    if running is None or not running.alive():
        kept = f"; its data stays in {_shown(layout.root)}" if load_config(layout.config_file) else ""
        print(f"CBR is not running{kept}. Start it with: {command_hint('up', layout.root)}")
        return NOT_RUNNING
    for record in running.processes:
        address = f"{HOST}:{record.port}" if record.port else ""
        print(f"{record.name:<12} pid {record.pid:<8} {address:<16} {'alive' if record.is_alive() else 'DEAD'}")
    stop = command_hint("down", layout.root)
    if running.all_running():
        print(f"CBR is running (clients: set -a; . {_shown(layout.env_file)}; set +a). Stop it with: {stop}")
        return RUNNING
    missing = [record.name for record in running.processes if not record.is_alive()]
    if not running.complete:
        missing.append("start-up (not finished, or interrupted)")
    print(f"CBR is partly running; not running: {', '.join(missing)}. Stop the rest with: {stop}, "
          f"or start it all again with: {command_hint('up', layout.root)}")
    return PARTLY_RUNNING


def wipe(run_dir: Path) -> int:
    """Removes the stack's data, ports and secret; refused while any of it runs, so nothing loses files under it."""
    layout = RunDir(Path(run_dir).absolute())
    if not layout.root.is_dir():
        print("Nothing to wipe")
        return 0
    with _locked(layout):
        load_config(layout.config_file)  # refuses the run folder of an earlier version, whose records it cannot read
        running = load_running(layout.processes_file)
        if running is not None and running.alive():
            print(f"CBR is running; stop it first with: {command_hint('down', layout.root)}", file=sys.stderr)
            return 1
        removed = [path for path in layout.wiped if path.exists() or path.is_symlink()]
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if removed:
        print(f"Wiped {_shown(layout.root)}: removed {', '.join(path.name for path in removed)}. "
              f"The next `up` starts from nothing.")
    else:
        print("Nothing to wipe")
    return 0


def command_hint(verb: str, run_dir: Path, *options: str) -> str:
    """The command that runs `verb` on this run folder, as it can be pasted into a shell in the current folder."""
    if not options and Path(run_dir).absolute() == Path(".run").absolute() and Path("Makefile").is_file():
        return f"make {verb}"
    argv = [_shown(Path(sys.executable)), "-m", "cbr_devstack", verb, "--run-dir", _shown(Path(run_dir).absolute()),
            *options]
    return shlex.join(argv)


def _config_for_start(layout: RunDir, new_ports: bool, region: str | None = None,
                      taken: frozenset[int] = frozenset(), replica_count: int | None = None) -> StackConfig:
    """The kept configuration, with what is missing or due chosen now and saved before anything starts; `taken`
    are ports another stack of this machine chose but may not listen on yet (`up-regions`)."""
    config = load_config(layout.config_file)
    if config is None:
        secret = secrets.token_urlsafe(48)
        config = StackConfig(secret, {}, *_dev_token(secret), region=region or "local")
    elif region and region != config.region:
        raise ProviderChangeError(
            f"this stack is region {config.region!r}; --region {region} needs a new stack: "
            f"{command_hint('wipe', layout.root)} first (it removes all data), or another --run-dir")
    if new_ports:
        config = dataclasses.replace(config, ports={})
    try:
        nodes = nats_cluster.nodes_wanted(os.environ, config.nats_nodes, layout.config_file.exists())
    except ValueError as exc:
        raise ProviderChangeError(f"{exc}; {command_hint('wipe', layout.root)} first (it removes all data), or "
                                  f"another --run-dir") from None
    if nodes != config.nats_nodes:
        config = dataclasses.replace(config, nats_nodes=nodes)
    kept = (*KEPT_PORTS, *nats_cluster.port_names(config.nats_nodes))
    if any(name not in config.ports for name in kept):  # a stack.json from before metrics gets theirs
        ports = dict(config.ports)
        for name in kept:
            ports.setdefault(name, kept_port(taken=set(ports.values()) | set(taken)))
        config = dataclasses.replace(config, ports={name: ports[name] for name in ports
                                                    if name in kept or name in ("transfer", STANDBY_PORT)
                                                    or replicas.is_replica_port(name)})
    if pg_standby.wanted() and STANDBY_PORT not in config.ports:  # kept from now on, until `wipe`
        config = dataclasses.replace(config, ports={**config.ports, STANDBY_PORT: kept_port(
            taken=set(config.ports.values()) | set(taken))})
    config = replicas.with_count(config, replica_count, lambda used: kept_port(taken=used | set(taken)))
    wanted = os.environ.get("CBR_PROVIDER", "").strip()
    if wanted and wanted not in ("local", "ceph"):
        raise ProviderChangeError(f"CBR_PROVIDER must be local or ceph, not {wanted!r}")
    if wanted and wanted != config.provider:
        if layout.config_file.exists():
            raise ProviderChangeError(
                f"this stack's disks are on the {config.provider} provider; CBR_PROVIDER={wanted} needs a new "
                f"stack: {command_hint('wipe', layout.root)} first (it removes all data), or another --run-dir")
        config = dataclasses.replace(config, provider=wanted)
    if config.dev_token_expires - time.time() < DEV_TOKEN_RENEWAL:
        config = dataclasses.replace(config, **dict(zip(("dev_token", "dev_token_expires"),
                                                         _dev_token(config.jwt_secret))))
        print(f"Issued a new dev token; it changes {_shown(layout.env_file)}.")
    save_config(layout.config_file, config)
    return config


def _busy_ports_message(layout: RunDir, busy: list[tuple[str, int]]) -> str:
    listed = ", ".join(f"{port} ({name})" for name, port in busy)
    return (f"CBR did not start: port{'s' if len(busy) > 1 else ''} {listed} of this stack "
            f"({_shown(layout.config_file)}) {'are' if len(busy) > 1 else 'is'} in use by another program.\n"
            f"Stop that program (`ss -ltnp` shows who listens where) and start again, or move the stack to new "
            f"ports, keeping its data:\n  {command_hint('up', layout.root, '--new-ports')}\n"
            f"New ports change {_shown(layout.env_file)}: source it again afterwards.")


def _bring_up(layout: RunDir, config: StackConfig) -> int:
    for folder in (layout.logs, layout.pool, layout.fs, layout.store):
        folder.mkdir(parents=True, exist_ok=True)
    running = RunningProcesses()
    save_running(layout.processes_file, running)  # from here on, whatever starts is recorded before anything else
    try:
        _start_all(layout, config, running)
    except (ServerError, MigrationError, NotServingError, FileNotFoundError) as exc:
        print(f"CBR did not start: {exc}", file=sys.stderr)
        if isinstance(exc, NotServingError):
            log = layout.logs / f"{exc.name}.log"
            print(f"--- last lines of {_shown(log)} ---\n{log_tail(log)}", file=sys.stderr)
        _stop(layout, running)
        return 1
    except BaseException:
        _stop(layout, running)  # Ctrl-C or a bug: leave nothing running that no record knows of
        raise
    _write_env_file(layout, config)
    running.complete = True
    save_running(layout.processes_file, running)
    _print_summary(layout, config)
    return 0


def _start_all(layout: RunDir, config: StackConfig, running: RunningProcesses) -> None:
    postgres = layout.postgres(config.ports["postgres"])
    standby = layout.pg_standby(postgres, config.ports[STANDBY_PORT]) if STANDBY_PORT in config.ports else None
    if standby is not None:
        kept = pg_standby.take_over_promoted(postgres, standby)
        if kept is not None:
            print(f"The standby was promoted (a failover): it is the primary now, and a new standby is copied from "
                  f"it; the old primary's data stays in {_shown(kept)}.")
    postgres.start()
    _record(layout, running, ProcessRecord.of("postgres", postgres.pid, postgres.port))
    if standby is not None:
        pg_standby.start_synchronous(standby, lambda: _record(
            layout, running, ProcessRecord.of(STANDBY_PORT, standby.pid, standby.port)))
    if config.nats_nodes > 1:
        cluster = nats_cluster.for_stack(layout.nats_cluster, config.ports, config.nats_nodes, layout.logs)
        cluster.start(on_started=lambda node: _record(layout, running, ProcessRecord.of(
            f"nats-{node.name}", node.pid, node.port)))
    else:
        nats = layout.nats(config.ports["nats"])
        nats.start()
        _record(layout, running, ProcessRecord.of("nats", nats.pid, nats.port))
    _migrate(layout, layout.database_url(config))

    from cbr_backup.keys import create_kek_file  # here, so that down, status and wipe need no cbr_backup

    addresses = _service_addresses(config)
    env = service_env(database_url=layout.database_url(config), nats_url=layout.nats_url(config),
                      jwt_secret=config.jwt_secret, addresses=addresses, pool_dir=layout.pool, fs_root=layout.fs, store_dir=layout.store,
                      kek_file=create_kek_file(layout.kek_file), region=config.region,
                      regions_file=config.regions_file)
    if config.nats_nodes > 1:
        env["CBR_NATS_REPLICAS"] = str(nats_cluster.CLUSTER_REPLICAS)
    if config.provider == "ceph":
        env.update(_start_ceph(layout, running))
    if config.transfer_tls:  # other regions reach the backup service here, over TLS (up-regions --tls)
        from cbr_devstack.regions import transfer_certificate
        cert, key = transfer_certificate(layout.root)
        env.update(CBR_TRANSFER_LISTEN_ADDR=f"{HOST}:{config.ports['transfer']}", CBR_TRANSFER_TLS_CERT=str(cert),
                   CBR_TRANSFER_TLS_KEY=str(key))
    metrics = _metrics_addresses(config)
    listening = {}
    for name, service, index, port in replicas.listeners(config.ports):  # one per service unless --replicas
        # The kept /metrics port and the other regions' transfer listener (a port of its own) are the first
        # replica's; a further backup replica serves the transfer API beside its own.
        own = env if index == 1 else {k: v for k, v in env.items() if not k.startswith("CBR_TRANSFER_")}
        process = start_service(service, {**own, "CBR_METRICS_ADDR": metrics[service] if index == 1 else ""},
                                f"{HOST}:{port}", layout.logs, replica=index)
        _record(layout, running, ProcessRecord.of(name, process.pid, port))
        listening[name] = f"{HOST}:{port}"
    worker = start_worker({**env, "CBR_METRICS_ADDR": metrics[WORKER]}, layout.logs)
    _record(layout, running, ProcessRecord.of(WORKER, worker.pid, 0))
    wait_serving(listening, HEALTH_TIMEOUT, alive=lambda name: running.find(name).is_alive())


def _start_ceph(layout: RunDir, running: RunningProcesses) -> dict[str, str]:
    """Starts the stack's private Ceph cluster (made on the first start, resumed later) and returns the settings
    that put the disks on its RBD pool and the chunks in its radosgw."""
    from cbr_devstack.ceph import CephCluster

    if (layout.ceph / "cluster.json").exists():
        cluster = CephCluster.existing(layout.ceph)
        cluster.resume()
    else:
        if layout.ceph.exists():
            shutil.rmtree(layout.ceph)  # a first start cut off before the cluster was whole
        cluster = CephCluster(layout.ceph)
        cluster.start()
    for name, pid in cluster.daemon_pids.items():
        _record(layout, running, ProcessRecord.of(f"ceph-{name}", pid))
    _ensure_bucket(cluster, CEPH_BUCKET)
    return {"CBR_PROVIDER": "ceph", "CBR_CEPH_CONF": str(cluster.conf_path), "CBR_RBD_POOL": cluster.pool,
            "CBR_STORE_URL": f"s3://{CEPH_BUCKET}/cbr?endpoint={cluster.rgw_endpoint}&region=us-east-1",
            "AWS_ACCESS_KEY_ID": cluster.access_key, "AWS_SECRET_ACCESS_KEY": cluster.secret_key}


def _ensure_bucket(cluster, bucket: str) -> None:
    import boto3  # the backup service's dependency, present where the services run

    client = boto3.session.Session().client("s3", endpoint_url=cluster.rgw_endpoint, region_name="us-east-1",
                                            aws_access_key_id=cluster.access_key,
                                            aws_secret_access_key=cluster.secret_key)
    try:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    finally:
        client.close()


def _stop(layout: RunDir, running: RunningProcesses) -> bool:
    """Stops exactly the recorded processes still alive; True when none is left and the record is gone."""
    stopped = stop_processes([r for r in running.processes
                              if r.name in (*SERVICES, WORKER) or replicas.is_replica_process(r.name)],
                             SERVICE_STOP_TIMEOUT)
    for names in CEPH_DAEMONS:
        stopped += stop_processes([r for r in running.processes if r.name in {f"ceph-{n}" for n in names}],
                                  SERVICE_STOP_TIMEOUT)
    for name, cluster_at in (("postgres", layout.postgres),  # the primary first: its standby sees it go
                             (STANDBY_PORT, lambda port: layout.pg_standby(None, port))):
        postgres = running.find(name)
        if postgres is not None and postgres.is_alive():
            cluster = cluster_at(postgres.port)
            if cluster.pid == postgres.pid:
                try:
                    cluster.stop()
                    stopped.append(postgres)
                except ServerError as exc:
                    print(f"could not stop {name}: {exc}", file=sys.stderr)
            else:
                print(f"not stopping pid {postgres.pid}: it is not the postmaster of {_shown(cluster.data_dir)}")
    stopped += stop_processes([r for r in running.processes if r.name == "nats" or r.name.startswith("nats-")])
    for record in stopped:
        print(f"stopped {record.name} (pid {record.pid})")
    left = running.alive()
    if left:
        print(f"still running: {', '.join(f'{r.name} (pid {r.pid})' for r in left)}; "
              f"{_shown(layout.processes_file)} is kept", file=sys.stderr)
        return False
    layout.processes_file.unlink(missing_ok=True)  # stack.json and cbr.env stay: the next `up` reuses them
    return True


def _record(layout: RunDir, running: RunningProcesses, record: ProcessRecord) -> None:
    running.processes.append(record)
    save_running(layout.processes_file, running)


def _migrate(layout: RunDir, database_url: str) -> None:
    log = layout.logs / "migrate.log"
    argv = [sys.executable, "-m", "cbr_common.migrate", *(f"cbr_{name}" for name in SERVICES)]
    with open(log, "ab") as output:
        try:
            done = subprocess.run(argv, env={**os.environ, "CBR_DATABASE_URL": database_url},
                                  stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                  timeout=MIGRATE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise MigrationError(f"migrations took over {MIGRATE_TIMEOUT:.0f}s\n{log_tail(log)}") from exc
    if done.returncode != 0:
        raise MigrationError(f"migrations failed ({done.returncode}):\n{log_tail(log)}")


def _dev_token(secret: str) -> tuple[str, int]:
    """A full-access token for project "dev", and when it expires."""
    # Imported here so that `down`, `status` and `wipe` keep working while cbr_common is broken or missing.
    from cbr_common.auth import issue_token

    now = int(time.time())
    token = issue_token(secret, project_id="dev", subject="dev", roles=["cbr_full_access"],
                        ttl_seconds=DEV_TOKEN_TTL, now=now)
    return token, now + DEV_TOKEN_TTL


def _service_addresses(config: StackConfig) -> dict[str, str]:
    """CBR_<SERVICE>_ADDR: one address per service, or its replicas' comma-separated."""
    return replicas.address_lists(config.ports)


def _metrics_addresses(config: StackConfig) -> dict[str, str]:
    return {name: f"{HOST}:{config.ports[port]}" for name, port in METRICS_PORTS.items()}


def _write_env_file(layout: RunDir, config: StackConfig) -> None:
    """Made from stack.json alone, so an unchanged stack.json gives the same file byte for byte."""
    lines = [f"# Written by `python -m cbr_devstack up`; valid until `wipe`. Use: set -a; . {layout.env_file}; set +a"]
    lines += [f"CBR_{name.upper()}_ADDR={address}" for name, address in _service_addresses(config).items()]
    lines += [f"CBR_{name.upper()}_METRICS_ADDR={address}" for name, address in _metrics_addresses(config).items()]
    lines += [f"CBR_TOKEN={config.dev_token}", f"CBR_DATABASE_URL={layout.database_url(config)}",
              f"CBR_NATS_URL={layout.nats_url(config)}"]
    descriptor = os.open(layout.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a token
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")


def _print_summary(layout: RunDir, config: StackConfig) -> None:
    print("CBR is up:" if config.region == "local" else f"CBR region {config.region} is up:")
    for name, address in _service_addresses(config).items():
        print(f"  {name:<12} {address}")
    print(f"  {'postgres':<12} {layout.database_url(config)}")
    print(f"  {'nats':<12} {layout.nats_url(config)}")
    if config.provider == "ceph":
        print(f"  {'ceph':<12} disks on RBD, chunks in radosgw: {_shown(layout.ceph / 'ceph.conf')}")
    print(f"Logs in {_shown(layout.logs)}/. For the cbr client: set -a; . {_shown(layout.env_file)}; set +a")
    print(f"Stop it (ports, secret and data stay for the next start) with: {command_hint('down', layout.root)}")


@contextlib.contextmanager
def _locked(layout: RunDir) -> Iterator[None]:
    """One `up`, `down` or `wipe` at a time per run folder."""
    with open(layout.lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
