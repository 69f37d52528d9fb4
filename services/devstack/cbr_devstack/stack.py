"""Bringing the embedded stack up and down: Postgres, NATS, migrations and the four services in one run folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cbr_devstack.health import NotServingError, wait_serving
from cbr_devstack.nats import NatsServer
from cbr_devstack.ports import HOST, free_port
from cbr_devstack.postgres import PostgresCluster
from cbr_devstack.processes import ProcessRecord, ServerError, log_tail, stop_processes
from cbr_devstack.services import SERVICES, WORKER, service_env, start_service, start_worker
from cbr_devstack.state import StackState, load_state, save_state

HEALTH_TIMEOUT = 60.0
MIGRATE_TIMEOUT = 180.0
SERVICE_STOP_TIMEOUT = 10.0
DEV_TOKEN_TTL = 30 * 24 * 3600


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunDir:
    """Where everything of one stack lives; data folders survive `down`, so a later `up` reuses them."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

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
    def nats_store(self) -> Path:
        return self.root / "nats"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def fs(self) -> Path:
        return self.root / "fs"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def postgres(self, port: int | None = None) -> PostgresCluster:
        return PostgresCluster(self.pg_data, port, log_path=self.logs / "postgres.log")

    def nats(self) -> NatsServer:
        return NatsServer(self.nats_store, log_path=self.logs / "nats.log")


def up(run_dir: Path) -> int:
    layout = RunDir(Path(run_dir).absolute())
    layout.root.mkdir(parents=True, exist_ok=True)
    with _locked(layout):
        state = load_state(layout.state_file)
        if state is not None:
            if state.complete and all(record.is_alive() for record in state.processes):
                print(f"CBR is already running (see {_shown(layout.env_file)})")
                return 0
            print("Stopping what is left of an earlier run first.")
            if not _stop(layout, state):
                return 1
        return _bring_up(layout)


def down(run_dir: Path) -> int:
    layout = RunDir(Path(run_dir).absolute())
    if not layout.root.is_dir():
        print("CBR is not running")
        return 0
    with _locked(layout):
        state = load_state(layout.state_file)
        if state is None or not any(record.is_alive() for record in state.processes):
            layout.state_file.unlink(missing_ok=True)
            print("CBR is not running")
            return 0
        return 0 if _stop(layout, state) else 1


def status(run_dir: Path) -> int:
    layout = RunDir(Path(run_dir).absolute())
    state = load_state(layout.state_file)
    if state is None:
        print("CBR is not running")
        return 0
    for record in state.processes:
        address = f"{HOST}:{record.port}" if record.port else ""
        print(f"{record.name:<12} pid {record.pid:<8} {address:<16} {'alive' if record.is_alive() else 'DEAD'}")
    if not state.complete:
        print("(start-up has not finished)")
    return 0


def _bring_up(layout: RunDir) -> int:
    secret = secrets.token_urlsafe(48)
    try:
        token = _dev_token(secret)
    except ImportError as exc:
        print(f"CBR did not start: cannot issue a dev token ({exc})", file=sys.stderr)
        return 1
    for folder in (layout.logs, layout.pool, layout.fs, layout.store):
        folder.mkdir(parents=True, exist_ok=True)
    state = StackState(jwt_secret=secret)
    save_state(layout.state_file, state)  # from here on, whatever starts is recorded before anything else happens
    try:
        addresses = _start_all(layout, state)
    except (ServerError, MigrationError, NotServingError, FileNotFoundError) as exc:
        print(f"CBR did not start: {exc}", file=sys.stderr)
        if isinstance(exc, NotServingError):
            log = layout.logs / f"{exc.name}.log"
            print(f"--- last lines of {_shown(log)} ---\n{log_tail(log)}", file=sys.stderr)
        _stop(layout, state)
        return 1
    except BaseException:
        _stop(layout, state)  # Ctrl-C or a bug: leave nothing running that no record knows of
        raise
    _write_env_file(layout, addresses, token, state)
    state.complete = True
    save_state(layout.state_file, state)
    _print_summary(layout, addresses, state)
    return 0


def _start_all(layout: RunDir, state: StackState) -> dict[str, str]:
    postgres = layout.postgres()
    postgres.start()
    _record(layout, state, ProcessRecord.of("postgres", postgres.pid, postgres.port))
    state.database_url = postgres.url
    nats = layout.nats()
    nats.start()
    _record(layout, state, ProcessRecord.of("nats", nats.pid, nats.port))
    state.nats_url = nats.url
    _migrate(layout, postgres.url)

    ports = _distinct_free_ports(len(SERVICES), taken={postgres.port, nats.port})
    addresses = {name: f"{HOST}:{port}" for name, port in zip(SERVICES, ports)}
    env = service_env(database_url=postgres.url, nats_url=nats.url, jwt_secret=state.jwt_secret,
                      addresses=addresses, pool_dir=layout.pool, fs_root=layout.fs, store_dir=layout.store)
    for name, port in zip(SERVICES, ports):
        process = start_service(name, env, addresses[name], layout.logs)
        _record(layout, state, ProcessRecord.of(name, process.pid, port))
    worker = start_worker(env, layout.logs)
    _record(layout, state, ProcessRecord.of(WORKER, worker.pid, 0))
    wait_serving(addresses, HEALTH_TIMEOUT, alive=lambda name: state.find(name).is_alive())
    return addresses


def _stop(layout: RunDir, state: StackState) -> bool:
    """Stops exactly the recorded processes still alive; True when none is left and the record is gone."""
    stopped = stop_processes([r for r in state.processes if r.name in (*SERVICES, WORKER)], SERVICE_STOP_TIMEOUT)
    postgres = state.find("postgres")
    if postgres is not None and postgres.is_alive():
        cluster = layout.postgres(postgres.port)
        if cluster.pid == postgres.pid:
            try:
                cluster.stop()
                stopped.append(postgres)
            except ServerError as exc:
                print(f"could not stop postgres: {exc}", file=sys.stderr)
        else:
            print(f"not stopping pid {postgres.pid}: it is not the postmaster of {_shown(layout.pg_data)}")
    nats = state.find("nats")
    stopped += stop_processes([nats] if nats else [])
    for record in stopped:
        print(f"stopped {record.name} (pid {record.pid})")
    left = [record for record in state.processes if record.is_alive()]
    if left:
        print(f"still running: {', '.join(f'{r.name} (pid {r.pid})' for r in left)}; "
              f"{_shown(layout.state_file)} is kept", file=sys.stderr)
        return False
    layout.state_file.unlink(missing_ok=True)
    layout.env_file.unlink(missing_ok=True)  # its token and addresses die with this stack
    return True


def _record(layout: RunDir, state: StackState, record: ProcessRecord) -> None:
    state.processes.append(record)
    save_state(layout.state_file, state)


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


def _dev_token(secret: str) -> str:
    # Imported here so that `down` and `status` keep working while cbr_common is broken or missing.
    from cbr_common.auth import issue_token

    return issue_token(secret, project_id="dev", subject="dev", roles=["cbr_full_access"],
                       ttl_seconds=DEV_TOKEN_TTL)


def _distinct_free_ports(count: int, taken: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def _write_env_file(layout: RunDir, addresses: dict[str, str], token: str, state: StackState) -> None:
    lines = [f"# Written by `python -m cbr_devstack up`. Use it with: set -a; . {_shown(layout.env_file)}; set +a"]
    lines += [f"CBR_{name.upper()}_ADDR={address}" for name, address in addresses.items()]
    lines += [f"CBR_TOKEN={token}", f"CBR_DATABASE_URL={state.database_url}", f"CBR_NATS_URL={state.nats_url}"]
    descriptor = os.open(layout.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a token
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")


def _print_summary(layout: RunDir, addresses: dict[str, str], state: StackState) -> None:
    print("CBR is up:")
    for name, address in addresses.items():
        print(f"  {name:<12} {address}")
    print(f"  {'postgres':<12} {state.database_url}")
    print(f"  {'nats':<12} {state.nats_url}")
    print(f"Logs in {_shown(layout.logs)}/. For the cbr client: set -a; . {_shown(layout.env_file)}; set +a")
    print("Stop it with: python -m cbr_devstack down")


@contextlib.contextmanager
def _locked(layout: RunDir) -> Iterator[None]:
    """One `up` or `down` at a time per run folder."""
    with open(layout.lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
