"""The tools under test, behind one small interface: restic, borg and CBR's own data-path CLI.

Each runner owns one folder: its repository (or chunk store), its caches and its logs. The harness calls
setup, full, incremental, restore_latest, inplace_restore_full (None where the tool has no such mode),
stored_paths and teardown, and measures every step from outside with bench.measure.run_measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from bench.measure import Measured, StepFailed, run_measured, run_quiet
from cbr_backup.datapath.disk_backup import DEFAULT_BLOCK_SIZE

PASSWORD = "bench"


class Runner:
    name = "tool"

    def __init__(self, folder: Path, *, timeout: float):
        self.folder = Path(folder)
        self.timeout = timeout
        self.logs = self.folder / "logs"
        self.tmp = self.folder / "tmp"

    # --- facts about the tool -------------------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def settings(self) -> dict:
        return {}

    # --- the steps ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        for folder in (self.folder, self.logs, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def full(self, disk: Path) -> Measured:
        raise NotImplementedError

    def incremental(self, disk: Path) -> Measured:
        raise NotImplementedError

    def restore_latest(self, target_dir: Path) -> tuple[Measured, Path]:
        """Restores the newest backup under target_dir; returns the measurement and the restored disk file."""
        raise NotImplementedError

    def inplace_restore_full(self, disk: Path) -> Measured | None:
        """Restores the full (pre-change) backup onto disk in place; None when the tool cannot."""
        return None

    def stored_paths(self) -> list[Path]:
        """What counts as the repository's stored bytes."""
        raise NotImplementedError

    def extra_sizes(self) -> dict:
        return {}

    def teardown(self) -> None:
        pass

    def tool_report(self, measured: Measured) -> dict:
        """The tool's own account of a step (its JSON output), for the record; {} when there is none."""
        for line in reversed(measured.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        return {}

    # --- helpers --------------------------------------------------------------------------------------------
    def _env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env["TMPDIR"] = str(self.tmp)
        env.update(extra)
        return env

    def _run(self, label: str, argv: list[str], **kwargs) -> Measured:
        return run_measured(argv, timeout=self.timeout, log_dir=self.logs, label=label, **kwargs).check()

    def _restored_path(self, target_dir: Path) -> Path:
        """Where restic and borg put the restored disk: its absolute path, recreated under target_dir."""
        return target_dir / (self.folder.absolute() / self.disk_name).relative_to("/")

    @staticmethod
    def then_sync(argv: list[str], path: Path) -> list[str]:
        """argv, then `sync FILE` (fsync of the restored file) in the same measured run: a restore counts once
        its bytes are durable, as CBR's new disk is synced before its task says success."""
        return ["sh", "-c", '"$@" && exec sync -- "$0"', str(path), *argv]

    disk_name = "disk.raw"


def find_restored_file(target_dir: Path, name: str) -> Path:
    """restic and borg recreate the source's absolute path under the target: find the one file called name."""
    found = [Path(folder) / name for folder, _, names in os.walk(target_dir) if name in names]
    if len(found) != 1:
        raise StepFailed(f"expected one restored {name} under {target_dir}, found {found}")
    return found[0]


class Restic(Runner):
    name = "restic"
    binary = "restic"

    def __init__(self, folder: Path, *, timeout: float):
        super().__init__(folder, timeout=timeout)
        self.repo = self.folder / "repo"
        self.cache = self.folder / "cache"

    def available(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        return (True, path) if path else (False, "restic is not installed")

    def version(self) -> str:
        return run_quiet([self.binary, "version"]).strip()

    def settings(self) -> dict:
        try:
            version = self.repository_config().get("version") if (self.repo / "config").exists() else None
        except (StepFailed, ValueError):
            version = None
        return {
            "repository_version": version if version is not None else "2 (requested)",
            "compression": "auto (zstd, restic's default for repository v2)",
            "encryption": "AES-256 + Poly1305-AES (always on)",
            "chunker": "Rabin CDC, 512 KiB min / 1 MiB avg / 8 MiB max (fixed by restic)",
            "restore": "restic restore latest --target DIR, then sync of the restored file, timed together (0.14 has "
                       "no sparse restore; it writes every byte)",
            "cache": "local cache in the work folder (not counted in stored bytes)",
        }

    def _restic_env(self) -> dict:
        return self._env(RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(self.cache))

    def _base(self) -> list[str]:
        return [self.binary, "--repo", str(self.repo), "--cache-dir", str(self.cache)]

    def setup(self) -> None:
        super().setup()
        run_quiet(self._base() + ["init", "--repository-version", "2"], env=self._restic_env())

    def repository_config(self) -> dict:
        return json.loads(run_quiet(self._base() + ["cat", "config"], env=self._restic_env()))

    def _backup(self, label: str, disk: Path) -> Measured:
        return self._run(label, self._base() + ["backup", "--host", "bench", "--json", str(disk)],
                         env=self._restic_env())

    def full(self, disk: Path) -> Measured:
        return self._backup("full", disk)

    def tool_report(self, measured: Measured) -> dict:
        for line in reversed(measured.stdout.splitlines()):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("message_type") == "summary":
                return message
        return {}

    def incremental(self, disk: Path) -> Measured:
        return self._backup("incremental", disk)  # restic picks the previous snapshot of host+path as parent

    def restore_latest(self, target_dir: Path) -> tuple[Measured, Path]:
        target_dir.mkdir(parents=True, exist_ok=True)
        measured = self._run("restore", self.then_sync(
            self._base() + ["restore", "latest", "--target", str(target_dir)], self._restored_path(target_dir)),
            env=self._restic_env())
        return measured, find_restored_file(target_dir, self.disk_name)

    def stored_paths(self) -> list[Path]:
        return [self.repo]


class Borg(Runner):
    name = "borg"
    binary = "borg"

    def __init__(self, folder: Path, *, timeout: float, compression: str = "lz4"):
        super().__init__(folder, timeout=timeout)
        self.repo = self.folder / "repo"
        self.home = self.folder / "home"
        self.compression = compression

    def available(self) -> tuple[bool, str]:
        path = shutil.which(self.binary)
        return (True, path) if path else (False, "borg is not installed")

    def version(self) -> str:
        return run_quiet([self.binary, "--version"]).strip()

    def settings(self) -> dict:
        return {
            "encryption": "repokey-blake2 (authenticated encryption, as restic always encrypts)",
            "compression": f"{self.compression}" + (" (borg's default)" if self.compression == "lz4" else ""),
            "chunker": "buzhash CDC, borg defaults (19,23,21,4095: 512 KiB min / 2 MiB avg / 8 MiB max)",
            "restore": "borg extract --sparse (holes for all-zero chunks), then sync of the restored file",
            "cache": "BORG_BASE_DIR in the work folder (chunks/files cache not counted in stored bytes)",
        }

    def _borg_env(self) -> dict:
        return self._env(BORG_PASSPHRASE=PASSWORD, BORG_BASE_DIR=str(self.home),
                         BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

    def setup(self) -> None:
        super().setup()
        self.home.mkdir(parents=True, exist_ok=True)
        run_quiet([self.binary, "init", "--encryption=repokey-blake2", str(self.repo)], env=self._borg_env())

    def _create(self, label: str, archive: str, disk: Path) -> Measured:
        return self._run(label, [self.binary, "create", "--json", "--compression", self.compression,
                                 f"{self.repo}::{archive}", str(disk)], env=self._borg_env())

    def full(self, disk: Path) -> Measured:
        return self._create("full", "full", disk)

    def tool_report(self, measured: Measured) -> dict:
        try:
            return json.loads(measured.stdout)["archive"]["stats"]
        except (ValueError, KeyError, TypeError):
            return {}

    def incremental(self, disk: Path) -> Measured:
        return self._create("incremental", "incr", disk)

    def restore_latest(self, target_dir: Path) -> tuple[Measured, Path]:
        target_dir.mkdir(parents=True, exist_ok=True)
        measured = self._run("restore", self.then_sync([self.binary, "extract", "--sparse", f"{self.repo}::incr"],
                                                       self._restored_path(target_dir)),
                             env=self._borg_env(), cwd=target_dir)
        return measured, find_restored_file(target_dir, self.disk_name)

    def stored_paths(self) -> list[Path]:
        return [self.repo]


class Cbr(Runner):
    """CBR's data path through `python -m cbr_backup.datapath`, with a private Postgres for its chunk index."""
    name = "cbr"

    def __init__(self, folder: Path, *, timeout: float, block_size: int | None = None):
        super().__init__(folder, timeout=timeout)
        self.store = self.folder / "store"
        self.key_file = self.folder / "vault.key"
        self.vault_id = str(uuid.uuid4())
        self.block_size = block_size
        self.cluster = None
        self.url: str | None = None
        self.full_manifest: str | None = None
        self.latest_manifest: str | None = None
        self.reports: dict[str, dict] = {}

    def available(self) -> tuple[bool, str]:
        spec = importlib.util.find_spec("cbr_backup")
        if spec is None or not spec.submodule_search_locations:
            return False, "cbr_backup is not importable (run make venv)"
        package = Path(next(iter(spec.submodule_search_locations)))
        if not (package / "datapath" / "__main__.py").exists():
            return False, f"the data-path CLI ({package / 'datapath' / '__main__.py'}) does not exist yet"
        return True, str(package)

    def version(self) -> str:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            commit = ""
        return f"cbr {commit or 'unknown'}"

    def settings(self) -> dict:
        return {
            "block_size": self.block_size or f"the CLI's default ({DEFAULT_BLOCK_SIZE >> 10} KiB)",
            "compression": "zstd (stored raw where it does not help)",
            "encryption": "AES-256-GCM per stored value (the key file holds the id key and a data key, as the "
                          "services make for every vault by default); restic and borg encrypt too",
            "chunk_index": "private Postgres (fsync on) in the work folder; its rows are reported apart",
            "restore": "sparse new disk (only non-zero blocks written); in place writes only differing blocks",
        }

    def setup(self) -> None:
        super().setup()
        from cbr_common.migrations import upgrade
        from cbr_devstack.postgres import PostgresCluster
        self.store.mkdir(parents=True, exist_ok=True)
        self.key_file.write_bytes(os.urandom(64))  # the id key and the data key: an encrypted vault
        os.chmod(self.key_file, 0o600)
        self.cluster = PostgresCluster(self.folder / "pg", fast=False)
        self.cluster.start()
        self.url = self.cluster.url
        upgrade(self.url, "cbr_backup")

    def _common(self) -> list[str]:
        return ["--store", str(self.store), "--database-url", self.url, "--vault-id", self.vault_id,
                "--key-file", str(self.key_file)]

    def _cli(self, label: str, args: list[str]) -> tuple[Measured, dict]:
        measured = self._run(label, [sys.executable, "-m", "cbr_backup.datapath", *args])
        lines = [line for line in measured.stdout.splitlines() if line.strip().startswith("{")]
        if not lines:
            raise StepFailed(f"{label}: no JSON line on stdout:\n{measured.stdout[-1000:]}")
        report = json.loads(lines[-1])
        self.reports[label] = report
        return measured, report

    def _backup(self, label: str, disk: Path, parent: str | None) -> Measured:
        args = ["backup", "--disk", str(disk), *self._common()]
        if parent:
            args += ["--parent-manifest", parent]
        if self.block_size:
            args += ["--block-size", str(self.block_size)]
        measured, report = self._cli(label, args)
        self.latest_manifest = str(report["manifest_id"])
        return measured

    def full(self, disk: Path) -> Measured:
        measured = self._backup("full", disk, None)
        self.full_manifest = self.latest_manifest
        return measured

    def incremental(self, disk: Path) -> Measured:
        return self._backup("incremental", disk, self.full_manifest)

    def restore_latest(self, target_dir: Path) -> tuple[Measured, Path]:
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / "disk.raw"
        measured, _ = self._cli("restore", ["restore", "--manifest-id", self.latest_manifest, *self._common(),
                                            "--target", str(target)])
        return measured, target

    def inplace_restore_full(self, disk: Path) -> Measured | None:
        measured, _ = self._cli("inplace_restore", ["restore", "--manifest-id", self.full_manifest,
                                                    *self._common(), "--target", str(disk), "--in-place"])
        return measured

    def stored_paths(self) -> list[Path]:
        return [self.store]

    def extra_sizes(self) -> dict:
        """The chunk index lives in Postgres, not in the store folder: its size is reported on its own."""
        if self.cluster is None:
            return {}
        try:
            import psycopg
            with psycopg.connect(self.cluster.conninfo(), connect_timeout=10) as conn:
                size = conn.execute("SELECT pg_total_relation_size('backup.chunks')").fetchone()[0]
                rows = conn.execute("SELECT count(*) FROM backup.chunks").fetchone()[0]
            return {"index_bytes": int(size), "index_rows": int(rows)}
        except Exception as exc:  # the table's name is the data path's business: report, do not fail
            return {"index_bytes": None, "index_error": str(exc).splitlines()[0]}

    def teardown(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def ensure_installed(binary: str, package: str, timeout: float = 600) -> tuple[bool, str]:
    """Installs a missing peer from Debian (apt-get) when we are root; says why not otherwise."""
    if shutil.which(binary):
        return True, "already installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False, f"{binary} missing and apt-get is not usable here"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=timeout, env=env)
        done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"apt-get install {package} failed: {exc}"
    if done.returncode != 0 or not shutil.which(binary):
        return False, f"apt-get install {package} failed: {done.stderr.strip()[-300:]}"
    return True, f"installed {package} from Debian"
