"""The same disk through the whole CBR service path: embedded stack, gRPC calls, the work queue, a worker.

Measures, from the CreateCheckpoint call to the backup being `available` (as GetTask sees it): the full backup and
the incremental after the change step; and CreateDiskFromBackup to its task's success (the worker syncs the new
disk before it says success). The restore is checked by sha256. Beside the times: the store folder's bytes after
the full and added by the incremental, its objects (files: packs, manifests, dictionaries, records) after the
full, the incremental's read bytes (its task's extra_info), and the worker's peak RSS per step: VmHWM from
/proc/PID/status at the end of the step, reset before it through /proc/PID/clear_refs where the kernel allows.
The stack's run folder, and so its pool of disks and snapshots, is the folder given (bench.pools).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import grpc

from bench.measure import MB, disk_usage, drop_caches
from bench.workload import sha256_file, sparse_copy

POLL_S = 0.05
GIB = 1 << 30


def worker_pid(run_dir: Path) -> int | None:
    """The embedded stack's worker process, as its processes.json records it."""
    try:
        records = json.loads((run_dir / "processes.json").read_text())["processes"]
    except (OSError, ValueError, KeyError):
        return None
    return next((r["pid"] for r in records if r.get("name") == "worker"), None)


def reset_peak_rss(pid: int | None) -> bool:
    """Resets the process's VmHWM to its current RSS (clear_refs "5"), so that a step's peak is its own."""
    if pid is None:
        return False
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5\n")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int | None) -> float | None:
    """VmHWM of the process in MB (2^20 bytes), None when it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) * 1024 / MB, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _env_file(run_dir: Path) -> dict:
    values = {}
    for line in (run_dir / "cbr.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def measure(pristine: Path, run_dir: Path, change: Callable[[Path], None], timeout: float,
            encrypted: bool = True) -> dict:
    """The bench's vault is encrypted (the default, as restic always is); encrypted=False measures the cost.

    change(disk) applies the workload's change step to the service's disk, in place."""
    up = subprocess.run([sys.executable, "-m", "cbr_devstack", "up", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        down(run_dir)
        return {"error": f"the embedded stack did not start: {up.stderr.strip()[-500:]}"}
    try:
        return _measure(pristine, run_dir, _env_file(run_dir), change, timeout, encrypted)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        down(run_dir)


def down(run_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "cbr_devstack", "down", "--run-dir", str(run_dir)],
                   capture_output=True, timeout=120)


def _measure(pristine: Path, run_dir: Path, env: dict, change: Callable[[Path], None], timeout: float,
             encrypted: bool) -> dict:
    from cbr.backup.v1 import backup_pb2, backup_pb2_grpc, protectable_pb2, protectable_pb2_grpc, task_pb2, \
        task_pb2_grpc
    from cbr.common.v1 import common_pb2
    from cbr.vault.v1 import vault_pb2, vault_pb2_grpc

    metadata = (("authorization", f"Bearer {env['CBR_TOKEN']}"),)
    backup_channel = grpc.insecure_channel(env["CBR_BACKUP_ADDR"])
    protectables = protectable_pb2_grpc.ProtectableServiceStub(backup_channel)
    backups = backup_pb2_grpc.BackupServiceStub(backup_channel)
    tasks = task_pb2_grpc.TaskServiceStub(backup_channel)
    vaults = vault_pb2_grpc.VaultServiceStub(grpc.insecure_channel(env["CBR_VAULT_ADDR"]))
    store = Path(env.get("CBR_STORE_DIR") or run_dir / "store")
    pid = worker_pid(run_dir)
    rss: dict = {}

    size = pristine.stat().st_size
    disk = protectables.CreateDisk(protectable_pb2.CreateDiskRequest(name="bench", size_bytes=size),
                                   metadata=metadata).disk
    sparse_copy(pristine, Path(disk.path))
    vault = vaults.CreateVault(vault_pb2.CreateVaultRequest(
        name="bench", object_type=common_pb2.OBJECT_TYPE_DISK, protect_type=vault_pb2.PROTECT_TYPE_BACKUP,
        size_gb=max(10, 4 * size >> 30), encrypted=encrypted, resources=[vault_pb2.ResourceRef(
            resource_id=disk.resource_id, type=common_pb2.OBJECT_TYPE_DISK)]), metadata=metadata).vault
    if vault.encrypted != encrypted:
        raise RuntimeError(f"the bench's vault says encrypted={vault.encrypted}, {encrypted} was asked for")

    def wait(task_id: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id), metadata=metadata).task
            if task.status == task_pb2.TASK_STATUS_SUCCESS:
                return task
            if task.status not in (task_pb2.TASK_STATUS_WAITING, task_pb2.TASK_STATUS_RUNNING):
                raise RuntimeError(f"task {task_id} ended {task_pb2.TaskStatus.Name(task.status)}: {task.error}")
            time.sleep(POLL_S)
        raise TimeoutError(f"task {task_id} did not finish in {timeout} s")

    def timed(step: str, start: Callable[[], str]):
        drop_caches()
        reset_peak_rss(pid)
        t0 = time.perf_counter()
        task = wait(start())
        seconds = time.perf_counter() - t0
        rss[step] = peak_rss_mb(pid)
        return seconds, task

    def checkpoint() -> str:
        cp = backups.CreateCheckpoint(backup_pb2.CreateCheckpointRequest(vault_id=vault.vault_id),
                                      metadata=metadata).checkpoint
        return cp.resources[0].task_id

    before = disk_usage(store)
    full_s, _ = timed("full", checkpoint)
    after_full = disk_usage(store)
    change(Path(disk.path))
    changed_sha = sha256_file(Path(disk.path))
    incr_s, incr_task = timed("incr", checkpoint)
    after_incr = disk_usage(store)
    latest = incr_task.backup_id
    restored_id: dict = {}

    def new_disk() -> str:
        reply = backups.CreateDiskFromBackup(backup_pb2.CreateDiskFromBackupRequest(backup_id=latest,
                                                                                    name="restored"),
                                             metadata=metadata)
        restored_id["disk"] = reply.disk_id
        return reply.task_id

    restore_s, _ = timed("restore", new_disk)
    restored = protectables.GetProtectable(protectable_pb2.GetProtectableRequest(
        type=common_pb2.OBJECT_TYPE_DISK, resource_id=restored_id["disk"]), metadata=metadata).protectable
    full_stored = after_full["bytes"] - before["bytes"]
    full_objects = after_full["files"] - before["files"]
    read = incr_task.extra_info.get("read_bytes")
    peaks = [v for v in rss.values() if v is not None]
    return {"full_s": round(full_s, 3), "incr_s": round(incr_s, 3), "restore_s": round(restore_s, 3),
            "restore_ok": sha256_file(Path(restored.path)) == changed_sha, "encrypted": vault.encrypted,
            "full_stored_bytes": full_stored, "full_stored_apparent_bytes":
                after_full["apparent_bytes"] - before["apparent_bytes"],
            "incr_added_bytes": after_incr["bytes"] - after_full["bytes"],
            "incr_added_apparent_bytes": after_incr["apparent_bytes"] - after_full["apparent_bytes"],
            "full_objects": full_objects,
            "objects_per_gib": round(full_objects / (full_stored / GIB), 1) if full_stored > 0 else None,
            "incr_read_bytes": int(read) if read and read.isdigit() else None,
            "rss_mb": rss, "peak_rss_mb": max(peaks) if peaks else None, "worker_pid_found": pid is not None}
