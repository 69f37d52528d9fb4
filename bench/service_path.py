"""The same disk through the whole CBR service path: embedded stack, gRPC calls, the work queue, a worker.

Measures, from the CreateCheckpoint call to the backup being `available` (as GetTask sees it): the full backup and
the incremental after the change step; and CreateDiskFromBackup to its task's success. Restores are checked by
sha256. Compared with the CLI figures of the same run, the difference is what the services add (snapshot copy,
queueing, the final transaction, polling).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc

from bench.measure import drop_caches
from bench.workload import mutate, sha256_file, sparse_copy

POLL_S = 0.05


def _env_file(run_dir: Path) -> dict:
    values = {}
    for line in (run_dir / "cbr.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def measure(pristine: Path, work: Path, change_percent: float, change_seed: int, timeout: float,
            encrypted: bool = True) -> dict:
    """The bench's vault is encrypted (the default, as restic always is); encrypted=False measures the cost."""
    run_dir = work / "stack"
    up = subprocess.run([sys.executable, "-m", "cbr_devstack", "up", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        return {"error": f"the embedded stack did not start: {up.stderr.strip()[-500:]}"}
    try:
        return _measure(pristine, _env_file(run_dir), change_percent, change_seed, timeout, encrypted)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        subprocess.run([sys.executable, "-m", "cbr_devstack", "down", "--run-dir", str(run_dir)],
                       capture_output=True, timeout=120)


def _measure(pristine: Path, env: dict, change_percent: float, change_seed: int, timeout: float,
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

    def wait(task_id: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = tasks.GetTask(task_pb2.GetTaskRequest(task_id=task_id), metadata=metadata).task
            if task.status == task_pb2.TASK_STATUS_SUCCESS:
                return
            if task.status not in (task_pb2.TASK_STATUS_WAITING, task_pb2.TASK_STATUS_RUNNING):
                raise RuntimeError(f"task {task_id} ended {task_pb2.TaskStatus.Name(task.status)}: {task.error}")
            time.sleep(POLL_S)
        raise TimeoutError(f"task {task_id} did not finish in {timeout} s")

    def backup_once() -> tuple[float, str]:
        drop_caches()
        t0 = time.perf_counter()
        cp = backups.CreateCheckpoint(backup_pb2.CreateCheckpointRequest(vault_id=vault.vault_id),
                                      metadata=metadata).checkpoint
        wait(cp.resources[0].task_id)
        return time.perf_counter() - t0, cp.resources[0].backup_id

    full_s, _ = backup_once()
    mutate(Path(disk.path), change_percent, change_seed)
    changed_sha = sha256_file(Path(disk.path))
    incr_s, latest = backup_once()
    drop_caches()
    t0 = time.perf_counter()
    reply = backups.CreateDiskFromBackup(backup_pb2.CreateDiskFromBackupRequest(backup_id=latest, name="restored"),
                                         metadata=metadata)
    wait(reply.task_id)
    restore_s = time.perf_counter() - t0
    restored = protectables.GetProtectable(protectable_pb2.GetProtectableRequest(
        type=common_pb2.OBJECT_TYPE_DISK, resource_id=reply.disk_id), metadata=metadata).protectable
    return {"full_s": round(full_s, 3), "incr_s": round(incr_s, 3), "restore_s": round(restore_s, 3),
            "restore_ok": sha256_file(Path(restored.path)) == changed_sha, "encrypted": vault.encrypted}
