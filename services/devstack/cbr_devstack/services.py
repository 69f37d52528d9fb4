"""How the four CBR services are started: their modules, environment and log files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from cbr_devstack.processes import start_detached

SERVICES = ("vault", "backup", "policy", "replication")
WORKER = "worker"  # one backup worker (python -m cbr_backup.worker); more can join from anywhere
# The port of each process's Prometheus /metrics (CBR_METRICS_ADDR), kept in stack.json as "<name>_metrics".
METRICS_PORTS = {name: f"{name}_metrics" for name in (*SERVICES, WORKER)}


def service_env(*, database_url: str, nats_url: str, jwt_secret: str, addresses: Mapping[str, str],
                pool_dir: Path, fs_root: Path, store_dir: Path, kek_file: Path, region: str = "local",
                regions_file: str = "", base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every service shares; start_service adds each one's CBR_LISTEN_ADDR."""
    env = dict(os.environ if base is None else base)
    env.update({
        "CBR_DATABASE_URL": database_url,
        "CBR_NATS_URL": nats_url,
        "CBR_JWT_SECRET": jwt_secret,
        "CBR_POOL_DIR": str(Path(pool_dir).absolute()),
        "CBR_FS_ROOT": str(Path(fs_root).absolute()),
        "CBR_STORE_DIR": str(Path(store_dir).absolute()),
        "CBR_KEK_FILE": str(Path(kek_file).absolute()),
        "CBR_REGION": region,
        "CBR_REGIONS_FILE": regions_file,
        "PYTHONUNBUFFERED": "1",  # so the log files show a crash's last lines
    })
    env.update({f"CBR_{name.upper()}_ADDR": address for name, address in addresses.items()})
    return env


def start_service(name: str, env: Mapping[str, str], listen_addr: str, log_dir: Path,
                  replica: int = 1) -> subprocess.Popen:
    """Runs `python -m cbr_<name>` detached, its output appended to <log_dir>/<name>.log (<name>-<replica>.log
    for the further replicas of a service)."""
    log_name = name if replica == 1 else f"{name}-{replica}"
    return start_detached([sys.executable, "-m", f"cbr_{name}"], {**env, "CBR_LISTEN_ADDR": listen_addr},
                          Path(log_dir) / f"{log_name}.log")


def start_worker(env: Mapping[str, str], log_dir: Path) -> subprocess.Popen:
    return start_detached([sys.executable, "-m", "cbr_backup.worker"], dict(env), Path(log_dir) / f"{WORKER}.log")
