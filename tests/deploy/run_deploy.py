"""`make test-deploy`: the compose deployment (deploy/) run on a container engine of its own.

Starts containerd and dockerd (Debian's docker.io) under a temporary folder: own sockets, data and exec roots, no
bridge, no iptables, so an engine the machine may already run is never touched. Then loads or builds the base
images from Debian's packages (deploy/base-images.sh, cached in CBR_DEPLOY_CACHE), builds every CBR image with
docker-compose, brings the stack up with host networking on free ports of 127.0.0.1 (deploy/docker-compose.host.yml),
waits for every health check, checks that nothing listens beyond 127.0.0.1, backs a disk up and restores it (in
place and to a new disk) through the `cbr` CLI, scales the workers to three and backs up again, and tears it all
down: no container, network or volume may remain. Finally it stops the engine by pid and removes its folder,
whatever happened before. Needs root. Every wait is bounded; a failure says which step and shows the logs.

Not collected by pytest (it needs root and an engine): python -m tests.deploy.run_deploy
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = "/usr/bin/docker"          # Debian's CLI, matching its daemon (another may come first on PATH)
DOCKERD = "/usr/sbin/dockerd"
CONTAINERD = "/usr/bin/containerd"
COMPOSE = "/usr/bin/docker-compose"
LOCAL_IMAGES = dict(line.split("=", 1) for line in (DEPLOY / "local-images.env").read_text().splitlines()
                    if line and not line.startswith("#"))
HOST_PORTS = ("POSTGRES", "NATS", "NATS_MONITOR", "NATS_ROUTE", "NATS_2", "NATS_2_MONITOR", "NATS_2_ROUTE",
              "NATS_3", "NATS_3_MONITOR", "NATS_3_ROUTE", "VAULT", "BACKUP", "POLICY", "REPLICATION",
              "VAULT_METRICS", "BACKUP_METRICS", "POLICY_METRICS", "REPLICATION_METRICS")
SERVICES = ("vault", "backup", "policy", "replication")
MIB = 1024 * 1024
DISK_MIB = 48

# Bounds of each wait, in seconds: generous for a loaded 2-core machine, finite so CI never hangs.
ENGINE_START = 90
BASE_IMAGES = 1200
BUILD = 1800
UP = 600
HEALTHY = 300
CLI_CALL = 120
TASK = 600
DOWN = 300
ENGINE_STOP = 60


class DeployError(Exception):
    """A step failed; the message says which and why."""


class Stopped(BaseException):
    """SIGTERM or SIGHUP: leave through the clean-up like Ctrl-C does."""


def log(text: str) -> None:
    print(f"[test-deploy {time.strftime('%H:%M:%S')}] {text}", flush=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    log(f"{name} ...")
    yield
    log(f"{name}: done in {time.monotonic() - started:.0f} s")


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float, what: str,
        stdin: bytes | None = None, cwd: Path | None = None, output: Path | None = None) -> str:
    """argv's stdout; a DeployError with its output's tail if it fails or outlasts timeout. With `output`, both
    streams go to that file (long builds) instead."""
    try:
        if output is not None:
            with output.open("ab") as sink:
                done = subprocess.run(argv, env=env, timeout=timeout, input=stdin, cwd=cwd, stdout=sink,
                                      stderr=subprocess.STDOUT)
            text = ""
            if done.returncode != 0:
                text = output.read_text(errors="replace")[-6000:]
        else:
            done = subprocess.run(argv, env=env, timeout=timeout, input=stdin, cwd=cwd, capture_output=True)
            text = done.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what}: no result within {timeout:.0f} s ({' '.join(argv)})") from None
    if done.returncode != 0:
        tail = text if output is not None else (text + done.stderr.decode(errors="replace"))[-6000:]
        raise DeployError(f"{what}: exit {done.returncode} ({' '.join(argv)})\n{tail}")
    return text


def free_ports(count: int) -> list[int]:
    """Distinct ports of 127.0.0.1 nobody listens on now (all held open together so none repeats)."""
    held = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


class Engine:
    """containerd and dockerd of this test alone, in `folder`; stop() ends them by pid and removes the folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.processes: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER": DOCKER, "DOCKER_BUILDKIT": "0",
                "COMPOSE_DOCKER_CLI_BUILD": "0"}

    def docker(self, *args: str, timeout: float = CLI_CALL, what: str = "docker") -> str:
        return run([DOCKER, *args], env=self.env(), timeout=timeout, what=what)

    def start(self) -> None:
        f = self.folder
        # Its own containerd: a dockerd finding the machine's /run/containerd socket would share that one.
        (f / "containerd.toml").write_text(
            f'version = 2\nroot = "{f}/containerd/root"\nstate = "{f}/containerd/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{f}/containerd.sock"\n')
        self.spawn([CONTAINERD, "--config", str(f / "containerd.toml")], f / "containerd.log")
        self.wait_for(lambda: (f / "containerd.sock").exists(), "containerd's socket", f / "containerd.log")
        self.spawn([DOCKERD, "--data-root", str(f / "data"), "--exec-root", str(f / "exec"), "-H", self.host,
                    "--pidfile", str(f / "dockerd.pid"), "--containerd", str(f / "containerd.sock"),
                    "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
                   f / "dockerd.log")
        self.wait_for(self.answers, "dockerd", f / "dockerd.log")

    def spawn(self, argv: list[str], logfile: Path) -> None:
        with logfile.open("wb") as sink:
            # A session of its own: a Ctrl-C at the terminal reaches this script, which then stops them in order.
            self.processes.append(subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, start_new_session=True))

    def answers(self) -> bool:
        done = subprocess.run([DOCKER, "version"], env=self.env(), capture_output=True, timeout=20)
        return done.returncode == 0

    def wait_for(self, ready, what: str, logfile: Path) -> None:
        deadline = time.monotonic() + ENGINE_START
        while not ready():
            dead = [p for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"exited {dead[0].returncode}" if dead else f"not ready within {ENGINE_START} s"
                raise DeployError(f"{what} {why}; its log ends:\n{logfile.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """dockerd first (it stops what still runs), then containerd; then any shim left over, by pid."""
        for process in reversed(self.processes):
            if process.poll() is None:
                started = time.monotonic()
                process.terminate()
                try:
                    process.wait(ENGINE_STOP)
                except subprocess.TimeoutExpired:
                    log(f"pid {process.pid} ({process.args[0]}) ignored SIGTERM for {ENGINE_STOP} s: killing it")
                    process.kill()
                    process.wait(10)
                log(f"{Path(process.args[0]).name} (pid {process.pid}) stopped in {time.monotonic() - started:.0f} s")
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount in self.mounts():
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        started = time.monotonic()
        shutil.rmtree(self.folder, ignore_errors=True)
        log(f"{self.folder} removed in {time.monotonic() - started:.0f} s")
        if self.folder.exists():
            log(f"warning: could not remove all of {self.folder}")

    def leftover_pids(self) -> list[int]:
        """Processes naming this folder on their command line: containerd's shims, started for this engine."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if f"{self.folder}/".encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
        return found

    def mounts(self) -> list[str]:
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        return sorted((p for p in points if p.startswith(f"{self.folder}/")), key=len, reverse=True)


class Stack:
    """docker-compose on the engine: deploy/docker-compose.yml with the host-networking override."""

    def __init__(self, engine: Engine, folder: Path):
        self.engine = engine
        self.folder = folder
        self.project = f"cbrtest{secrets.token_hex(3)}"
        self.ports = dict(zip(HOST_PORTS, free_ports(len(HOST_PORTS)), strict=True))
        self.secret = secrets.token_urlsafe(32)
        self.kek = folder / "kek"
        self.kek.write_bytes(secrets.token_bytes(32))
        self.kek.chmod(0o600)
        os.chown(self.kek, 10001, 10001)  # the services run as uid 10001 (deploy/Dockerfile)
        (folder / "empty.env").write_text("")
        self.started = False

    def env(self) -> dict[str, str]:
        return {**self.engine.env(), **LOCAL_IMAGES, "COMPOSE_PROJECT_NAME": self.project,
                "CBR_JWT_SECRET": self.secret, "CBR_KEK_FILE_HOST": str(self.kek), "CBR_VERSION": "deploytest",
                **{f"CBR_HOST_{name}_PORT": str(port) for name, port in self.ports.items()}}

    def compose(self, *args: str, timeout: float, what: str, output: Path | None = None) -> str:
        # An empty --env-file: a developer's deploy/.env must not change what is tested.
        argv = [COMPOSE, "--env-file", str(self.folder / "empty.env"), "-p", self.project,
                "-f", str(DEPLOY / "docker-compose.yml"), "-f", str(DEPLOY / "docker-compose.host.yml"), *args]
        return run(argv, env=self.env(), timeout=timeout, what=what, cwd=DEPLOY, output=output)

    def containers(self) -> list[dict]:
        ids = self.engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}",
                                 what="listing containers").split()
        return json.loads(self.engine.docker("inspect", *ids, what="inspecting containers")) if ids else []

    def exec_backup(self, script: str, *args: str) -> str:
        """Runs a Python script in the backup service's container (the disks live in its volumes)."""
        return self.compose("exec", "-T", "backup", "python", "-c", script, *args, timeout=CLI_CALL,
                            what="python in the backup container").strip()


def service(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def wait_healthy(stack: Stack, workers: int) -> None:
    """Every service with a health check healthy, migrate exited 0, `workers` workers running."""
    deadline = time.monotonic() + HEALTHY
    while True:
        problems = []
        containers = stack.containers()
        for c in containers:
            state, name = c["State"], c["Name"].lstrip("/")
            if service(c) == "migrate":
                if state["Status"] != "exited" or state["ExitCode"] != 0:
                    problems.append(f"{name}: {state['Status']} (exit {state['ExitCode']})")
            elif "Health" in state:
                if state["Health"]["Status"] != "healthy":
                    problems.append(f"{name}: {state['Health']['Status']}")
            elif not state["Running"]:
                problems.append(f"{name}: {state['Status']}")
        seen = {service(c) for c in containers}
        missing = {"postgres", "nats", "migrate", "worker", *SERVICES} - seen
        running_workers = sum(1 for c in containers if service(c) == "worker" and c["State"]["Running"])
        if running_workers != workers:
            problems.append(f"{running_workers} workers running, not {workers}")
        if not problems and not missing:
            return
        if time.monotonic() > deadline:
            raise DeployError(f"not healthy within {HEALTHY} s: {'; '.join(problems)}"
                              + (f"; no container for {', '.join(sorted(missing))}" if missing else ""))
        time.sleep(2)


def listeners_of(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket listening in these processes (read from /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                hex_addr, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_addr)
                # /proc shows each 32-bit word in host (little-endian) order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw),
                              int(hex_port, 16)))
    return found


def loopback(address: str) -> bool:
    """127.0.0.1, also as a dual-stack socket shows it (::ffff:127.0.0.1), or ::1."""
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def check_loopback_only(stack: Stack) -> None:
    """Host networking shares the host's interfaces: every listening socket must be on 127.0.0.1."""
    wide = []
    counted = 0
    for c in stack.containers():
        if not c["State"]["Running"]:
            continue
        pids = [int(line.split()[0]) for line in stack.engine.docker(
            "container", "top", c["Id"], "-eo", "pid", what="listing container processes").splitlines()[1:]]
        listening = listeners_of(pids)
        counted += len(listening)
        wide += [f"{c['Name'].lstrip('/')} on {addr}:{port}" for addr, port in listening if not loopback(addr)]
    if wide:
        raise DeployError("listening beyond 127.0.0.1: " + ", ".join(wide))
    # postgres, three nats nodes (client, monitor, route), and each service's gRPC and /metrics ports at the least.
    if counted < 1 + 9 + 2 * len(SERVICES):
        raise DeployError(f"only {counted} listening sockets found in the containers; the check saw nothing")
    log(f"{counted} listening sockets in the containers, all on the loopback interface")


class Cli:
    """The `cbr` command of this checkout against the stack, through 127.0.0.1 only."""

    def __init__(self, stack: Stack):
        env = {**os.environ, "CBR_JWT_SECRET": stack.secret}
        token = run([sys.executable, "-m", "cbr_cli.admin", "token", "issue", "--project", "deploytest",
                     "--role", "cbr_full_access", "--ttl", "2h"], env=env, timeout=CLI_CALL,
                    what="cbr-admin token issue").strip()
        self.env = {**os.environ, "CBR_TOKEN": token,
                    **{f"CBR_{name.upper()}_ADDR": f"127.0.0.1:{stack.ports[name.upper()]}" for name in SERVICES}}
        self.cwd = stack.folder  # no .run/cbr.env above it to mix in

    def __call__(self, *args: str, timeout: float = CLI_CALL) -> dict:
        out = run([sys.executable, "-m", "cbr_cli", "--json", *args], env=self.env, timeout=timeout,
                  what=f"cbr {' '.join(args[:2])}", cwd=self.cwd)
        return json.loads(out)


# Writes the disk (argv[1]) with seeded 1 MiB regions, random or text-like, some left as holes; prints nothing.
FILL = """
import random, sys
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
with open(path, "r+b") as f:
    size = f.seek(0, 2)
    for offset in range(0, size, 1 << 20):
        kind = rng.randrange(3)
        if kind == 0:
            continue
        f.seek(offset)
        f.write(rng.randbytes(1 << 20) if kind == 1 else (b"cbr deploy test %d " % offset) * 40000)
"""
SHA256 = """
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while block := f.read(1 << 22):
        h.update(block)
print(h.hexdigest())
"""


def backup_and_restore(stack: Stack, cli: Cli) -> str:
    """A disk backed up, overwritten, restored in place and to a new disk, both checked byte for byte."""
    disk = cli("disk", "create", "deploy-disk", "--size", f"{DISK_MIB}M")
    stack.exec_backup(FILL, disk["path"], "1")
    original = stack.exec_backup(SHA256, disk["path"])
    vault = cli("vault", "create", "deploy-vault", "--type", "disk", "--size", "1G", "--resource",
                disk["resource_id"])
    backups = cli("backup", "create", vault["vault_id"], "--name", "deploy-full", "--wait", timeout=TASK)["items"]
    if len(backups) != 1 or backups[0]["status"] != "BACKUP_STATUS_AVAILABLE":
        raise DeployError(f"backup did not end available: {backups}")
    backup_id = backups[0]["backup_id"]
    log(f"backup {backup_id}: {backups[0].get('logical_bytes')} logical bytes, {backups[0].get('stored_bytes')} stored")

    stack.exec_backup(FILL, disk["path"], "2")
    if stack.exec_backup(SHA256, disk["path"]) == original:
        raise DeployError("overwriting the disk did not change it: the restore would prove nothing")
    task = cli("backup", "restore", backup_id, "--wait", timeout=TASK)
    if task["status"] != "TASK_STATUS_SUCCESS":
        raise DeployError(f"restore in place ended {task['status']}: {task.get('error')}")
    if (restored := stack.exec_backup(SHA256, disk["path"])) != original:
        raise DeployError(f"restored in place, the disk's SHA-256 is {restored}, not {original}")

    task = cli("backup", "create-disk", backup_id, "--name", "deploy-restored", "--wait", timeout=TASK)
    if task["status"] != "TASK_STATUS_SUCCESS":
        raise DeployError(f"restore to a new disk ended {task['status']}: {task.get('error')}")
    new = [d for d in cli("disk", "list")["items"] if d["name"] == "deploy-restored"]
    if len(new) != 1 or (copy := stack.exec_backup(SHA256, new[0]["path"])) != original:
        raise DeployError(f"the new disk from the backup differs: {new} "
                          f"{'' if len(new) != 1 else copy} vs {original}")
    log(f"restored in place and to a new disk: both {original[:16]}..., as backed up")
    return vault["vault_id"]


def scale_workers(stack: Stack, cli: Cli, vault_id: str) -> None:
    """Three workers, and the stack still backs up; none of the three restarted meanwhile."""
    stack.compose("up", "-d", "--no-recreate", "--scale", "worker=3", timeout=UP, what="scaling workers to 3")
    wait_healthy(stack, workers=3)
    backups = cli("backup", "create", vault_id, "--name", "deploy-after-scale", "--wait", timeout=TASK)["items"]
    if len(backups) != 1 or backups[0]["status"] != "BACKUP_STATUS_AVAILABLE":
        raise DeployError(f"the backup after scaling did not end available: {backups}")
    workers = [c for c in stack.containers() if service(c) == "worker"]
    bad = [f"{c['Name']}: running={c['State']['Running']} restarts={c['RestartCount']}" for c in workers
           if not c["State"]["Running"] or c["RestartCount"]]
    if len(workers) != 3 or bad:
        raise DeployError(f"{len(workers)} workers; not steadily running: {bad}")


def tear_down(stack: Stack, networks_before: set[str]) -> None:
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=DOWN, what="docker-compose down")
    stack.started = False
    engine = stack.engine
    containers = engine.docker("ps", "-aq", what="listing containers").split()
    volumes = engine.docker("volume", "ls", "-q", what="listing volumes").split()
    networks = set(engine.docker("network", "ls", "--format", "{{.Name}}", what="listing networks").split())
    if containers or volumes or networks - networks_before:
        raise DeployError(f"left behind: containers {containers}, volumes {volumes}, "
                          f"networks {sorted(networks - networks_before)}")
    log("down: no container, volume or network of the stack remains")


def show_logs(stack: Stack) -> None:
    with contextlib.suppress(Exception):
        print(stack.compose("logs", "--no-color", "--tail", "40", timeout=120, what="logs")[-20000:], flush=True)
    with contextlib.suppress(Exception):
        for c in stack.containers():
            print(f"{c['Name']}: {c['State']['Status']} exit={c['State']['ExitCode']} "
                  f"health={c['State'].get('Health', {}).get('Status')}", flush=True)


def main() -> int:
    if os.geteuid() != 0:
        print("make test-deploy runs as root (it starts a container engine)", file=sys.stderr)
        return 2
    missing = [p for p in (DOCKER, DOCKERD, CONTAINERD, COMPOSE) if not os.access(p, os.X_OK)]
    if missing:
        print(f"missing {', '.join(missing)}: make deploy-packages (Debian's docker.io, docker-compose, "
              "debootstrap)", file=sys.stderr)
        return 2

    def stop(signum, _frame):
        raise Stopped(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="cbr-deploy-", dir="/tmp"))
    engine = Engine(folder)
    stack = None
    failed = True
    try:
        with step(f"starting containerd and dockerd in {folder}"):
            engine.start()
        with step("base images from Debian's packages (deploy/base-images.sh)"):
            run([str(DEPLOY / "base-images.sh")], env=engine.env(), timeout=BASE_IMAGES,
                what="deploy/base-images.sh", output=folder / "base-images.log")
        stack = Stack(engine, folder)
        log(f"project {stack.project}, ports {stack.ports}")
        with step("building every image (docker-compose build)"):
            stack.compose("build", timeout=BUILD, what="docker-compose build", output=folder / "build.log")
        networks_before = set(engine.docker("network", "ls", "--format", "{{.Name}}", what="networks").split())
        with step("docker-compose up, two workers"):
            stack.started = True
            stack.compose("up", "-d", "--scale", "worker=2", timeout=UP, what="docker-compose up")
        with step("waiting for every health check"):
            wait_healthy(stack, workers=2)
        check_loopback_only(stack)
        cli = Cli(stack)
        with step("backup and restore through the cbr CLI"):
            vault_id = backup_and_restore(stack, cli)
        with step("scaling workers to three, and backing up again"):
            scale_workers(stack, cli, vault_id)
        with step("tearing down"):
            tear_down(stack, networks_before)
        failed = False
    except DeployError as exc:
        log(f"FAILED: {exc}")
    except (KeyboardInterrupt, Stopped) as exc:
        log(f"interrupted ({exc or 'SIGINT'}); cleaning up")
    finally:
        # The clean-up is bounded; a second signal must not cut it short and leave the engine running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if stack is not None and stack.started:
            if failed:
                show_logs(stack)
            with contextlib.suppress(Exception):
                stack.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=DOWN, what="down")
        with step("stopping the engine and removing its folder"):
            engine.stop()
    log(f"{'FAILED' if failed else 'passed'} after {time.monotonic() - began:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
