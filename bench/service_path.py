"""The same disk through the whole CBR service path: embedded stack, gRPC calls, the work queue, a worker.

Measures, from the CreateCheckpoint call to the backup being `available` (as GetTask sees it): the full backup and
the incremental after the change step; and CreateDiskFromBackup to its task's success (the worker syncs the new
disk before it says success). The restore is checked by sha256. Beside the times: the store folder's bytes after
the full and added by the incremental, its objects (files: packs, manifests, dictionaries, records) after the
full, the incremental's read bytes (its task's extra_info), and the worker's peak RSS per step: VmHWM from
/proc/PID/status at the end of the step, reset before it through /proc/PID/clear_refs where the kernel allows.
The stack's run folder, and so its pool of disks and snapshots, is the folder given (bench.pools).

With provider="ceph" the stack starts with CBR_PROVIDER=ceph: its private Ceph cluster under the run folder holds
the disks as RBD images and the chunks in radosgw. The workload is then written into the disk's image and the
change step applied there (bench.rbd_disk); stored bytes and objects are the S3 listing of the stack's bucket
(object sizes: RGW's own allocation is not visible to a client); before the incremental, diff_iterate from the
full's anchor snapshot gives the changed bytes, rounded out to the backup's 128 KiB blocks, beside the bytes the
incremental read. while_up(s3) runs last, while the cluster is still up (the bench's S3 request count on RGW).
"""
from __future__ import annotations

import json
import os
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


def ceph_s3(run_dir: Path) -> dict:
    """The S3 settings of a ceph stack's radosgw (its cluster.json): endpoint, keys, the stack's chunk bucket."""
    from cbr_devstack.ports import HOST
    from cbr_devstack.stack import CEPH_BUCKET

    state = json.loads((run_dir / "ceph" / "cluster.json").read_text())
    return {"endpoint": f"http://{HOST}:{state['rgw_port']}", "access_key": state["access_key"],
            "secret_key": state["secret_key"], "bucket": CEPH_BUCKET}


def measure(pristine: Path, run_dir: Path, change: Callable, timeout: float, encrypted: bool = True,
            provider: str = "local", while_up: Callable[[dict], None] | None = None,
            peer_full: Callable[[], float] | None = None, full_pairs: int = 0) -> dict:
    """The bench's vault is encrypted (the default, as restic always is); encrypted=False measures the cost.

    change(disk) applies the workload's change step to the service's disk, in place: a Path for the local
    provider, a bench.rbd_disk.RbdDisk for ceph.
    full_pairs: after the steps, that many alternating pairs of full backups of the pristine disk, each into a
    fresh repository or vault: peer_full() (a peer's, returning its seconds), then the service's (a new disk and
    vault in the same stack). The machine's speed drifts by tens of percent within minutes, so the ratio of
    one pair is noisy; the median of several is the figure to trust (bench/README.md)."""
    env = {**os.environ, "CBR_PROVIDER": provider}
    up = subprocess.run([sys.executable, "-m", "cbr_devstack", "up", "--run-dir", str(run_dir)],
                        capture_output=True, text=True, timeout=600, env=env)
    if up.returncode != 0:
        down(run_dir)
        return {"error": f"the embedded stack did not start: {(up.stderr or up.stdout).strip()[-500:]}"}
    try:
        result = _measure(pristine, run_dir, _env_file(run_dir), change, timeout, encrypted, provider == "ceph",
                          peer_full if provider != "ceph" else None, full_pairs)
        if while_up is not None and provider == "ceph":
            while_up(ceph_s3(run_dir))
        return result
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    finally:
        down(run_dir)


def down(run_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "cbr_devstack", "down", "--run-dir", str(run_dir)],
                   capture_output=True, timeout=120)


class _S3Usage:
    """disk_usage()'s figures for the ceph stack's bucket: object sizes (apparent = real here) and count."""

    def __init__(self, s3: dict):
        import boto3

        from bench.s3_path import REGION

        self.bucket = s3["bucket"]
        self.client = boto3.session.Session().client("s3", endpoint_url=s3["endpoint"], region_name=REGION,
                                                     aws_access_key_id=s3["access_key"],
                                                     aws_secret_access_key=s3["secret_key"])

    def __call__(self, _ignored=None) -> dict:
        from bench.s3_path import _listing

        files, size = _listing(self.client, self.bucket, "")
        return {"bytes": size, "apparent_bytes": size, "files": files}


def _measure(pristine: Path, run_dir: Path, env: dict, change: Callable, timeout: float,
             encrypted: bool, ceph: bool = False, peer_full: Callable[[], float] | None = None,
             full_pairs: int = 0) -> dict:
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
    usage = _S3Usage(ceph_s3(run_dir)) if ceph else disk_usage
    pid = worker_pid(run_dir)
    rss: dict = {}

    size = pristine.stat().st_size

    def new_disk_and_vault(name: str):
        disk = protectables.CreateDisk(protectable_pb2.CreateDiskRequest(name=name, size_bytes=size),
                                       metadata=metadata).disk
        if not ceph:
            sparse_copy(pristine, Path(disk.path))
        vault = vaults.CreateVault(vault_pb2.CreateVaultRequest(
            name=name, object_type=common_pb2.OBJECT_TYPE_DISK, protect_type=vault_pb2.PROTECT_TYPE_BACKUP,
            size_gb=max(10, 4 * size >> 30), encrypted=encrypted, resources=[vault_pb2.ResourceRef(
                resource_id=disk.resource_id, type=common_pb2.OBJECT_TYPE_DISK)]), metadata=metadata).vault
        if vault.encrypted != encrypted:
            raise RuntimeError(f"the bench's vault says encrypted={vault.encrypted}, {encrypted} was asked for")
        return disk, vault

    disk, vault = new_disk_and_vault("bench")
    if ceph:
        from bench.rbd_disk import RbdDisk

        conf = run_dir / "ceph" / "ceph.conf"
        with RbdDisk(conf, disk.path) as image:
            image.load(pristine)
            # restic's row backs up the workload's file: the image must be those bytes (untimed check)
            same_data = image.sha256() == sha256_file(pristine)

        def checksum(locator: str) -> str:
            with RbdDisk(conf, locator) as image:
                return image.sha256()
    else:
        same_data = None

        def checksum(path: str) -> str:
            return sha256_file(Path(path))

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

    def checkpoint(vault_id: str = vault.vault_id) -> str:
        cp = backups.CreateCheckpoint(backup_pb2.CreateCheckpointRequest(vault_id=vault_id),
                                      metadata=metadata).checkpoint
        return cp.resources[0].task_id

    before = usage(store)
    full_s, full_task = timed("full", checkpoint)
    after_full = usage(store)
    diff: dict = {}
    if ceph:
        with RbdDisk(conf, disk.path) as image:
            change(image)
            diff = _diff_since_full(image, full_task.backup_id)
    else:
        change(Path(disk.path))
    changed_sha = checksum(disk.path)
    incr_s, incr_task = timed("incr", checkpoint)
    after_incr = usage(store)
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
    pairs = []
    for k in range(full_pairs if peer_full is not None else 0):
        peer_s = peer_full()
        _, fresh = new_disk_and_vault(f"pair-{k}")
        cbr_s, _ = timed("pair", lambda: checkpoint(fresh.vault_id))
        pairs.append({"peer_s": round(peer_s, 3), "cbr_s": round(cbr_s, 3)})
    full_stored = after_full["bytes"] - before["bytes"]
    full_objects = after_full["files"] - before["files"]
    read = incr_task.extra_info.get("read_bytes")
    peaks = [v for v in rss.values() if v is not None]
    return {"full_s": round(full_s, 3), "incr_s": round(incr_s, 3), "restore_s": round(restore_s, 3),
            "restore_ok": checksum(restored.path) == changed_sha, "encrypted": vault.encrypted,
            "full_stored_bytes": full_stored, "full_stored_apparent_bytes":
                after_full["apparent_bytes"] - before["apparent_bytes"],
            "incr_added_bytes": after_incr["bytes"] - after_full["bytes"],
            "incr_added_apparent_bytes": after_incr["apparent_bytes"] - after_full["apparent_bytes"],
            "full_objects": full_objects,
            "objects_per_gib": round(full_objects / (full_stored / GIB), 1) if full_stored > 0 else None,
            "incr_read_bytes": int(read) if read and read.isdigit() else None,
            "rss_mb": rss, "peak_rss_mb": max(peaks) if peaks else None, "worker_pid_found": pid is not None,
            "full_pairs": pairs,
            "store": "radosgw (S3 listing of the stack's bucket)" if ceph else "folder",
            **({"image_is_workload_file": same_data} if ceph else {}), **diff}


def _diff_since_full(image, full_backup_id: str) -> dict:
    """diff_iterate from the full's anchor snapshot (cbr-<backup id>) to the image now: its extents' bytes and
    the same rounded out to the backup's blocks, which the incremental should read no more than."""
    from bench.rbd_disk import DIFF_BLOCK, blocks_bytes

    snapshots = image.cbr_snapshots()
    anchor = f"cbr-{full_backup_id}"
    if anchor not in snapshots:
        if len(snapshots) != 1:
            return {"diff_error": f"no single anchor snapshot of the full: {snapshots}"}
        anchor = snapshots[0]
    extents = image.diff_since(anchor)
    return {"diff_iterate_bytes": sum(length for _, length in extents),
            "diff_iterate_block_bytes": blocks_bytes(extents, DIFF_BLOCK), "diff_block": DIFF_BLOCK}
