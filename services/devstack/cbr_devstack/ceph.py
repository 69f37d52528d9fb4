"""A private single-node Ceph cluster in one folder: one mon, one mgr, one OSD on a sparse BlueStore file, one
radosgw, all on 127.0.0.1, from Debian's packages (ceph-mon, ceph-mgr, ceph-osd, radosgw, ceph-common).

The daemons run in the foreground as our child processes, so stop() waits for them and nothing outlives the
cluster object's owner by accident. Readiness is I/O, not health: a stat of a missing object in the rbd pool
answers ENOENT only once its placement groups are active, and radosgw accepts TCP connections."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from cbr_devstack.ports import HOST, free_ports, port_accepts
from cbr_devstack.processes import ServerError, log_tail

TOOLS = ("ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "ceph", "rados", "radosgw-admin", "ceph-authtool",
         "monmaptool")
PACKAGES = "ceph-mon ceph-mgr ceph-osd radosgw ceph-common"
RGW_NAME = "client.rgw.cbr"
S3_USER = "cbr"
# Every entity's key in one keyring: `ceph-mon --mkfs` imports it whole into the auth database.
ENTITIES = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"},
    "osd.0": {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
    "mgr.x": {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"},
    RGW_NAME: {"mon": "allow rw", "osd": "allow rwx", "mgr": "allow rw"},
}
_ENOENT = 2


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class CephCluster:
    """One cluster under `root`: ceph.conf and the keyring there, daemon data, logs and sockets below it."""

    def __init__(self, root: Path, *, pool: str = "rbd", block_size_gib: int = 20, rgw: bool = True,
                 rgw_tls: bool = False, die_with_parent: bool = False):
        self.root = Path(root).absolute()
        # The kernel kills the daemons when the thread that started them ends (PR_SET_PDEATHSIG), so a test run
        # killed outright leaves no cluster behind. Only for a start from a thread that lives as long as the
        # cluster, such as the main thread.
        self.die_with_parent = die_with_parent
        self.pool = pool
        self.block_size_gib = block_size_gib
        self.with_rgw = rgw
        self.fsid = str(uuid.uuid4())
        picked = free_ports(4)
        self.mon_ports = (picked[0], picked[1])  # msgr2, msgr1
        self.rgw_port = picked[2] if rgw else None
        # radosgw also serves HTTPS, with a self-signed certificate for 127.0.0.1 (clients trust tls_certificate)
        self.rgw_tls_port = picked[3] if rgw and rgw_tls else None
        self.access_key = secrets.token_hex(10).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self._daemons: dict[str, subprocess.Popen] = {}
        self.timeline: list[tuple[str, float]] = []  # (step, seconds since start began), for measurements

    # what clients need ---------------------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def keyring_path(self) -> Path:
        return self.root / "keyring"

    @property
    def rgw_endpoint(self) -> str:
        if self.rgw_port is None:
            raise ServerError("this cluster runs no radosgw")
        return f"http://{HOST}:{self.rgw_port}"

    @property
    def rgw_tls_endpoint(self) -> str:
        if self.rgw_tls_port is None:
            raise ServerError("this cluster's radosgw serves no HTTPS")
        return f"https://{HOST}:{self.rgw_tls_port}"

    @property
    def tls_certificate(self) -> Path:
        return self.root / "rgw" / "cert.pem"

    @property
    def env(self) -> dict[str, str]:
        """What the ceph/rados/rbd tools and librados (with no conffile given) need to find this cluster."""
        return {"CEPH_CONF": str(self.conf_path), "CEPH_KEYRING": str(self.keyring_path)}

    @property
    def state_path(self) -> Path:
        return self.root / "cluster.json"

    @property
    def daemon_pids(self) -> dict[str, int]:
        """The running daemons by name (mon.a, mgr.x, osd.0, rgw), in start order."""
        return {name: process.pid for name, process in self._daemons.items()}

    @classmethod
    def existing(cls, root: Path) -> "CephCluster":
        """The cluster an earlier start() made in root (its ports and S3 keys are in cluster.json), to resume."""
        state = json.loads((Path(root) / "cluster.json").read_text())
        cluster = cls(root, pool=state["pool"], rgw=state["rgw_port"] is not None)
        cluster.fsid, cluster.mon_ports, cluster.rgw_port = state["fsid"], tuple(state["mon_ports"]), state["rgw_port"]
        cluster.access_key, cluster.secret_key = state["access_key"], state["secret_key"]
        return cluster

    def is_running(self) -> bool:
        return bool(self._daemons) and all(process.poll() is None for process in self._daemons.values())

    # start and stop ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """From an empty folder to a cluster serving the pool and S3; kills what it started if it fails."""
        missing = missing_tools()
        if missing:
            raise ServerError(f"Ceph tools missing: {' '.join(missing)} (apt-get install {PACKAGES}; "
                              "or `make ceph-packages` as root)")
        if self.conf_path.exists():
            raise ServerError(f"a Ceph cluster already lives in {self.root}")
        deadline = time.monotonic() + timeout
        began = time.monotonic()

        def mark(step: str) -> None:
            self.timeline.append((step, round(time.monotonic() - began, 3)))

        try:
            self._write_config()
            self._make_keyring()
            mark("config and keys")
            self._make_mon()
            self._spawn("mon.a", "ceph-mon", "-i", "a")
            self._spawn("mgr.x", "ceph-mgr", "-i", "x")  # not waited for: rbd and rgw work without it
            osd_uuid = str(uuid.uuid4())
            # The first command waits for the mon to take connections (--connect-timeout).
            self.admin("osd", "new", osd_uuid, "0", deadline=deadline)
            mark("mon up")
            (self.root / "osd" / "0").mkdir(parents=True)
            # Its complaints about a missing device label are normal on a new store: to a file, not our output.
            self._run(["ceph-osd", "-c", str(self.conf_path), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid],
                      deadline, log=self.root / "log" / "osd.0.mkfs.out")
            mark("osd mkfs")
            self._spawn("osd.0", "ceph-osd", "-i", "0")
            self.admin("osd", "pool", "create", self.pool, deadline=deadline)
            self.admin("osd", "pool", "application", "enable", self.pool, "rbd", deadline=deadline)
            self._wait_pool_active(deadline)
            mark("pool active")
            if self.with_rgw:
                self._start_rgw(deadline)
                mark("rgw serving")
            self._save_state()
        except BaseException:
            self.kill()
            raise

    def resume(self, timeout: float = 120.0) -> None:
        """Starts the daemons of a cluster an earlier start() made (its data kept), until the pool and S3
        serve again; kills what it started if it fails."""
        deadline = time.monotonic() + timeout
        try:
            self._spawn("mon.a", "ceph-mon", "-i", "a")
            self._spawn("mgr.x", "ceph-mgr", "-i", "x")
            self._spawn("osd.0", "ceph-osd", "-i", "0")
            self._wait_pool_active(deadline)
            if self.with_rgw:
                self._spawn("rgw", "radosgw", "-n", RGW_NAME)
                self._wait_rgw(deadline)
        except BaseException:
            self.kill()
            raise

    def _save_state(self) -> None:
        state = {"fsid": self.fsid, "pool": self.pool, "mon_ports": list(self.mon_ports), "rgw_port": self.rgw_port,
                 "access_key": self.access_key, "secret_key": self.secret_key}
        descriptor = os.open(self.state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds S3 keys
        with os.fdopen(descriptor, "w") as file:
            json.dump(state, file)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the clients of the OSD first and the mon last; SIGKILL to what outlives `timeout`."""
        for names in (("rgw", "mgr.x"), ("osd.0",), ("mon.a",)):
            group = [self._daemons[name] for name in names if name in self._daemons]
            for process in group:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            for process in group:
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._daemons.clear()

    def kill(self) -> None:
        """SIGKILL to every daemon, then reaps them: for failures and throwaway clusters."""
        for process in self._daemons.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for process in self._daemons.values():
            process.wait()
        self._daemons.clear()

    # admin commands ------------------------------------------------------------------------------------------

    def admin(self, *args: str, deadline: float | None = None) -> str:
        """`ceph <args>` as client.admin; returns its standard output."""
        deadline = deadline or time.monotonic() + 60
        connect = max(1, int(deadline - time.monotonic()))
        return self._run(["ceph", "-c", str(self.conf_path), "--connect-timeout", str(connect), *args], deadline)

    def admin_json(self, *args: str) -> object:
        return json.loads(self.admin(*args, "--format", "json"))

    def create_s3_user(self, uid: str) -> tuple[str, str]:
        """Another S3 user with keys of its own (access key, secret key), e.g. a second tenant."""
        access, secret = secrets.token_hex(10).upper(), secrets.token_urlsafe(30)
        self._run(["radosgw-admin", "-c", str(self.conf_path), "user", "create", "--uid", uid,
                   "--display-name", uid, "--access-key", access, "--secret-key", secret],
                  time.monotonic() + 60)
        return access, secret

    # steps ---------------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        r = self.root
        for folder in ("log", "run", "crash", "mon", "mgr/ceph-x", "osd", "rgw"):
            (r / folder).mkdir(parents=True, exist_ok=True)
        v2, v1 = self.mon_ports
        tls = "" if self.rgw_tls_port is None else (
            f" ssl_endpoint={HOST}:{self.rgw_tls_port} ssl_certificate={self.tls_certificate}"
            f" ssl_private_key={r}/rgw/key.pem")
        rgw = "" if self.rgw_port is None else f"""
[{RGW_NAME}]
log_file = {r}/log/$name.log
admin_socket = {r}/run/$name.asok
rgw_frontends = beast endpoint={HOST}:{self.rgw_port}{tls}
rgw_data = {r}/rgw
rgw_thread_pool_size = 64
rgw_crypt_require_ssl = false
rgw_dns_name = localhost
"""
        # Each less obvious option says why beside it; without the paxos ones a start takes 3x longer.
        self.conf_path.write_text(f"""[global]
fsid = {self.fsid}
mon_host = [v2:{HOST}:{v2},v1:{HOST}:{v1}]
public_addr = {HOST}
keyring = {self.keyring_path}
run_dir = {r}/run
pid_file = {r}/run/$name.pid
log_file = {r}/log/$name.log
mon_cluster_log_file = {r}/log/cluster.log
crash_dir = {r}/crash
log_to_stderr = false
err_to_stderr = true
# one OSD: pools of one copy, placement at OSD level, few PGs (RGW makes 7 pools), no autoscaler moving them
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
# no lasting warnings about the deliberately small set-up or a disk shared with other work
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 1
# raised in this order and below the OSD's failsafe ratio, or health turns to an error (out of order)
mon_osd_nearfull_ratio = 0.97
mon_osd_backfillfull_ratio = 0.98
mon_osd_full_ratio = 0.99
osd_failsafe_full_ratio = 0.995

[mon]
mon_data = {r}/mon/$id
# each map change waits for one paxos round, 1 s by default: a 3x slower bring-up
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[mgr]
mgr_data = {r}/mgr/ceph-$id
mgr_initial_modules = iostat

[osd]
osd_data = {r}/osd/$id
osd_objectstore = bluestore
# beside osd_data, not in it: BlueStore links $osd_data/block to this path (ELOOP if they are one)
bluestore_block_path = {r}/osd/$id.block
bluestore_block_create = true
bluestore_block_size = {self.block_size_gib}G
bluestore_fsck_on_mkfs = false
osd_memory_target = 1073741824

[client]
# the tools and the tests' librados connections: no shared log file or admin socket to fight over
log_file =
admin_socket =
{rgw}""")

    def _make_keyring(self) -> None:
        deadline = time.monotonic() + 30
        for index, (entity, caps) in enumerate(ENTITIES.items()):
            argv = ["ceph-authtool", str(self.keyring_path), "--gen-key", "-n", entity]
            if index == 0:
                argv.insert(2, "--create-keyring")
            for service, cap in caps.items():
                argv += ["--cap", service, cap]
            self._run(argv, deadline)

    def _make_mon(self) -> None:
        deadline = time.monotonic() + 30
        monmap = self.root / "monmap"
        v2, v1 = self.mon_ports
        self._run(["monmaptool", "--create", "--fsid", self.fsid, "--addv", "a",
                   f"[v2:{HOST}:{v2},v1:{HOST}:{v1}]", str(monmap)], deadline)
        self._run(["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", "a", "--monmap", str(monmap),
                   "--keyring", str(self.keyring_path)], deadline)

    def _wait_pool_active(self, deadline: float) -> None:
        """A stat of a missing object blocks until the pool's PGs are active, then answers ENOENT."""
        while True:
            self._check_daemons()
            wait = min(5.0, deadline - time.monotonic())
            if wait <= 0:
                raise ServerError(f"pool {self.pool} not active in time\n{log_tail(self.root / 'log/osd.0.log')}")
            argv = ["rados", "-c", str(self.conf_path), "-p", self.pool, "stat", "cbr-readiness-probe"]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=wait, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == _ENOENT or "No such file" in done.stderr:
                return
            time.sleep(0.1)

    def _start_rgw(self, deadline: float) -> None:
        # The first radosgw-admin run also makes the default realm, zone group, zone and RGW's pools.
        self._run(["radosgw-admin", "-c", str(self.conf_path), "user", "create", "--uid", S3_USER,
                   "--display-name", S3_USER, "--access-key", self.access_key, "--secret-key", self.secret_key],
                  deadline)
        if self.rgw_tls_port is not None:
            self._run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                       "-nodes", "-days", "7", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
                       "-keyout", str(self.root / "rgw" / "key.pem"), "-out", str(self.tls_certificate)], deadline)
        self._spawn("rgw", "radosgw", "-n", RGW_NAME)
        self._wait_rgw(deadline)

    def _wait_rgw(self, deadline: float) -> None:
        while not all(port_accepts(port) for port in (self.rgw_port, self.rgw_tls_port) if port is not None):
            self._check_daemons()
            if time.monotonic() > deadline:
                raise ServerError(f"radosgw not listening on {self.rgw_port}\n"
                                  f"{log_tail(self.root / 'log' / (RGW_NAME + '.log'))}")
            time.sleep(0.05)

    # processes -----------------------------------------------------------------------------------------------

    def _spawn(self, name: str, *argv: str) -> None:
        log = self.root / "log" / f"{name}.out"
        # No preexec_fn: a Python-level fork of a process running gRPC threads (the tests' services) can abort in
        # the child before exec (seen: "mgr.x exited with -6"). setpriv sets the parent-death signal instead.
        prefix = ["setpriv", "--pdeathsig", "KILL"] if self.die_with_parent else []
        with open(log, "ab") as out:
            self._daemons[name] = subprocess.Popen([*prefix, argv[0], "-f", "-c", str(self.conf_path), *argv[1:]],
                                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                   cwd=self.root)

    def _check_daemons(self) -> None:
        for name, process in self._daemons.items():
            if process.poll() is not None:
                raise ServerError(f"{name} exited with {process.returncode}\n"
                                  f"{log_tail(self.root / 'log' / f'{name}.out')}\n"
                                  f"{log_tail(self.root / 'log' / f'{name}.log')}")

    def _run(self, argv: list[str], deadline: float, log: Path | None = None) -> str:
        self._check_daemons()
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise ServerError(f"no time left for {' '.join(argv[:3])}")
        env = {**os.environ, **self.env}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL, cwd=self.root)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"{' '.join(argv)} timed out") from exc
        if log is not None:
            log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise ServerError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout
